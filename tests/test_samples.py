"""Samples as users have them: stacked .npy/.npz files, onnxruntime test_data_set folders,
CalibrationDataReader-style objects and Python iterables, each sample checked against the
model's inputs with one-line errors naming where it came from."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantrs.errors import ConfigError
from quantrs.samples import InputSpec, describe_source, input_specs, iter_samples, load_samples

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64


def specs_of(*inputs):
    """Input specs of a tiny model with one Identity per (name, elem type, shape) input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _, _ in inputs],
        "samples",
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs],
        [helper.make_tensor_value_info(f"{name}_out", kind, shape) for name, kind, shape in inputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return input_specs(model)


DYNAMIC = specs_of(("x", F32, ["N", 4]))  # dynamic batch
BATCH1 = specs_of(("x", F32, [1, 4]))
BATCH2 = specs_of(("x", F32, [2, 4]))
TWO = specs_of(("ids", I64, [1, 3]), ("feats", F32, ["N", 2]))


def floats(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ids(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 10, size=shape).astype(np.int64)


def raises(message):
    return pytest.raises(ConfigError, match=re.escape(message))


# .npy / .npz files


def test_a_dynamic_batch_file_is_one_sample_as_today(tmp_path):
    data = floats(5, 4)
    np.save(tmp_path / "data.npy", data)
    (sample,) = load_samples(tmp_path / "data.npy", DYNAMIC)
    np.testing.assert_array_equal(sample["x"], data)


def test_an_array_with_one_more_axis_stacks_samples(tmp_path):
    data = floats(5, 2, 4)
    np.save(tmp_path / "data.npy", data)
    samples = load_samples(tmp_path / "data.npy", DYNAMIC)
    assert len(samples) == 5
    for i, sample in enumerate(samples):
        assert sample["x"].shape == (2, 4)
        np.testing.assert_array_equal(sample["x"], data[i])


@pytest.mark.parametrize("specs, rows, count", [(BATCH1, 5, 5), (BATCH2, 6, 3)])
def test_rows_split_into_the_fixed_batch(tmp_path, specs, rows, count):
    data = floats(rows, 4)
    np.save(tmp_path / "data.npy", data)
    samples = load_samples(tmp_path / "data.npy", specs)
    batch = rows // count
    assert len(samples) == count
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["x"], data[i * batch : (i + 1) * batch])


def test_the_fixed_batch_itself_is_one_sample(tmp_path):
    np.save(tmp_path / "data.npy", floats(2, 4))
    assert len(load_samples(tmp_path / "data.npy", BATCH2)) == 1


def test_rows_not_a_multiple_of_the_batch_name_the_axis(tmp_path):
    np.save(tmp_path / "data.npy", floats(5, 4))
    with raises(f"{tmp_path / 'data.npy'}: input 'x' has 5 on axis 0, the model expects 2"):
        load_samples(tmp_path / "data.npy", BATCH2)


def test_npz_inputs_stack_together(tmp_path):
    ids_rows, feats = ids(4, 3), floats(4, 7, 2)  # ids split by the fixed batch 1, feats on a new axis
    np.savez(tmp_path / "data.npz", ids=ids_rows, feats=feats)
    samples = load_samples(tmp_path / "data.npz", TWO)
    assert len(samples) == 4
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["ids"], ids_rows[i : i + 1])
        np.testing.assert_array_equal(sample["feats"], feats[i])


def test_npz_inputs_holding_different_counts(tmp_path):
    np.savez(tmp_path / "data.npz", ids=ids(4, 3), feats=floats(3, 7, 2))
    with pytest.raises(ConfigError) as info:
        load_samples(tmp_path / "data.npz", TWO)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'data.npz'}: ")
    assert "'ids' holds 4" in message and "'feats' 3" in message


def test_npz_input_left_whole_reports_its_own_error(tmp_path):
    specs = specs_of(("a", F32, [2, 3]), ("b", F32, [2, 3]))
    np.savez(tmp_path / "data.npz", a=floats(6, 3), b=floats(5, 3))
    with raises(f"{tmp_path / 'data.npz'}: input 'b' has 5 on axis 0, the model expects 2"):
        load_samples(tmp_path / "data.npz", specs)


def test_npz_names_are_checked_before_stacking(tmp_path):
    np.savez(tmp_path / "data.npz", ids=ids(4, 3), extra=floats(4, 7, 2))
    with raises(f"{tmp_path / 'data.npz'}: missing input(s) feats"):
        load_samples(tmp_path / "data.npz", TWO)


def test_a_folder_of_stacked_files_in_name_order(tmp_path):
    first, second = floats(3, 1, 4, seed=1), floats(2, 1, 4, seed=2)
    np.save(tmp_path / "b.npy", second)
    np.save(tmp_path / "a.npy", first)
    samples = load_samples(tmp_path, BATCH1)
    assert len(samples) == 5
    np.testing.assert_array_equal(np.stack([s["x"] for s in samples]), np.concatenate([first, second]))


def test_npy_for_a_two_input_model_still_asks_for_npz(tmp_path):
    np.save(tmp_path / "data.npy", floats(1, 3))
    with raises("a .npy sample feeds one input, the model has 2 (ids, feats); use .npz"):
        load_samples(tmp_path / "data.npy", TWO)


# errors in stacked slices name the slice


def test_nan_in_a_stacked_slice_names_it(tmp_path):
    data = floats(5, 1, 4)
    data[3, 0, 2] = np.nan
    np.save(tmp_path / "data.npy", data)
    samples = iter_samples(tmp_path / "data.npy", BATCH1)
    assert len([next(samples) for _ in range(3)]) == 3  # the good ones come first
    with raises(f"{tmp_path / 'data.npy'}[3]: input 'x' holds NaN"):
        next(samples)


def test_nan_in_a_batch_split_names_it(tmp_path):
    data = floats(6, 4)
    data[5, 0] = np.nan
    np.save(tmp_path / "data.npy", data)
    with raises(f"{tmp_path / 'data.npy'}[2]: input 'x' holds NaN"):
        load_samples(tmp_path / "data.npy", BATCH2)


def test_wrong_dtype_in_a_stacked_file_names_the_slice(tmp_path):
    np.save(tmp_path / "data.npy", floats(3, 1, 4).astype(np.float64))
    with raises(f"{tmp_path / 'data.npy'}[0]: input 'x' is float64, the model expects float32"):
        load_samples(tmp_path / "data.npy", BATCH1)


def test_wrong_fixed_dim_in_a_stacked_slice(tmp_path):
    np.save(tmp_path / "data.npy", floats(3, 1, 5))
    with raises(f"{tmp_path / 'data.npy'}[0]: input 'x' has 5 on axis 1, the model expects 4"):
        load_samples(tmp_path / "data.npy", BATCH1)


def test_wrong_rank_is_not_split(tmp_path):
    np.save(tmp_path / "data.npy", floats(2, 3, 2, 4))
    with raises(f"{tmp_path / 'data.npy'}: input 'x' has shape (2, 3, 2, 4), the model expects rank 2"):
        load_samples(tmp_path / "data.npy", DYNAMIC)


def test_an_empty_stack(tmp_path):
    np.save(tmp_path / "data.npy", np.zeros((0, 1, 4), np.float32))
    with raises(f"{tmp_path / 'data.npy'}: input 'x' has shape (0, 1, 4): no samples on axis 0"):
        load_samples(tmp_path / "data.npy", BATCH1)


# onnxruntime test_data_set folders


def write_set(folder, tensors, outputs=0):
    """input_K.pb for each (name or None, array); output_K.pb files that must be ignored."""
    folder.mkdir(parents=True)
    for k, (name, array) in enumerate(tensors):
        (folder / f"input_{k}.pb").write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    for k in range(outputs):
        (folder / f"output_{k}.pb").write_bytes(numpy_helper.from_array(floats(2), "out").SerializeToString())
    return folder


def test_a_model_folder_with_three_test_data_sets(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")  # as in the onnx model zoo: the model sits beside its sets
    sets = [(ids(1, 3, seed=i), floats(2, 2, seed=i)) for i in range(3)]
    for i, (a, b) in enumerate(sets):
        write_set(tmp_path / f"test_data_set_{i}", [("feats", b), ("ids", a)], outputs=1)
    samples = load_samples(tmp_path, TWO)
    assert len(samples) == 3
    for sample, (a, b) in zip(samples, sets):
        np.testing.assert_array_equal(sample["ids"], a)
        np.testing.assert_array_equal(sample["feats"], b)


def test_test_data_sets_in_numeric_order(tmp_path):
    for i in (10, 2, 1):
        write_set(tmp_path / f"test_data_set_{i}", [("x", np.full((1, 4), i, np.float32))])
    assert [s["x"][0, 0] for s in load_samples(tmp_path, BATCH1)] == [1, 2, 10]


def test_one_test_data_set_folder(tmp_path):
    a, b = ids(1, 3), floats(5, 2)
    folder = write_set(tmp_path / "test_data_set_0", [("ids", a), ("feats", b)], outputs=2)
    (sample,) = load_samples(folder, TWO)
    np.testing.assert_array_equal(sample["ids"], a)
    np.testing.assert_array_equal(sample["feats"], b)


def test_unnamed_tensors_feed_inputs_by_position(tmp_path):
    a, b = ids(1, 3), floats(5, 2)
    folder = write_set(tmp_path / "test_data_set_0", [(None, a), (None, b)])
    assert numpy_helper.to_array(onnx.load_tensor(str(folder / "input_0.pb"))).shape == (1, 3)
    assert onnx.load_tensor(str(folder / "input_0.pb")).name == ""
    (sample,) = load_samples(tmp_path, TWO)
    np.testing.assert_array_equal(sample["ids"], a)
    np.testing.assert_array_equal(sample["feats"], b)


def test_an_unnamed_tensor_beyond_the_model_inputs(tmp_path):
    folder = write_set(tmp_path / "test_data_set_0", [(None, floats(1, 4)), (None, floats(1, 4))])
    with raises(f"{folder / 'input_1.pb'}: an unnamed tensor for input 1, the model has 1 input(s)"):
        load_samples(folder, BATCH1)


def test_a_bad_tensor_in_a_test_data_set_names_its_file(tmp_path):
    folder = write_set(tmp_path / "test_data_set_0", [("ids", ids(1, 3)), ("feats", floats(5, 2).astype(np.float64))])
    with raises(f"{folder / 'input_1.pb'}: input 'feats' is float64, the model expects float32"):
        load_samples(tmp_path, TWO)


def test_a_test_data_set_missing_an_input_names_the_set(tmp_path):
    folder = write_set(tmp_path / "test_data_set_0", [("ids", ids(1, 3))])
    with raises(f"{folder}: missing input(s) feats"):
        load_samples(tmp_path, TWO)


@pytest.mark.parametrize("content", [b"not a tensor", b""])
def test_a_pb_that_is_not_a_tensor(tmp_path, content):
    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    (folder / "input_0.pb").write_bytes(content)
    with raises(f"{folder / 'input_0.pb'}: not a serialized onnx TensorProto"):
        load_samples(tmp_path, BATCH1)


def test_a_folder_without_samples_mentions_test_data(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(ConfigError) as info:
        iter_samples(tmp_path, BATCH1)  # raised at once, before iterating
    assert str(info.value).startswith(f"{tmp_path}: no .npy or .npz samples")
    assert "test_data_set_*/input_*.pb" in str(info.value)


def test_a_missing_path_fails_at_once(tmp_path):
    with raises(f"{tmp_path / 'nope.npy'}: no such samples file or folder"):
        iter_samples(tmp_path / "nope.npy", BATCH1)


# Python sources


class Reader:
    """The CalibrationDataReader protocol, duck-typed: get_next() until None."""

    def __init__(self, samples):
        self.samples = iter(samples)
        self.calls = 0

    def get_next(self):
        self.calls += 1
        return next(self.samples, None)


def test_a_get_next_reader(tmp_path):
    data = [{"x": floats(1, 4, seed=i)} for i in range(4)]
    reader = Reader(data)
    samples = load_samples(reader, BATCH1)
    assert len(samples) == 4 and reader.calls == 5
    np.testing.assert_array_equal(samples[2]["x"], data[2]["x"])


def test_an_onnxruntime_calibration_data_reader():
    from onnxruntime.quantization import CalibrationDataReader

    class Images(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": floats(1, 4, seed=i)} for i in range(3)])

        def get_next(self):
            return next(self.data, None)

    samples = load_samples(Images(), BATCH1)
    assert len(samples) == 3 and samples[0]["x"].shape == (1, 4)
    assert describe_source(Images()) == "Images.get_next()"


def test_a_reader_returning_something_else():
    with raises("sample 1: a sample must map input names to arrays, not list"):
        load_samples(Reader([{"x": floats(1, 4)}, [floats(1, 4)]]), BATCH1)


def test_a_list_of_dicts_is_taken_as_given():
    data = [{"x": floats(3, 4, seed=i)} for i in range(3)]
    samples = load_samples(data, DYNAMIC)
    assert len(samples) == 3
    np.testing.assert_array_equal(samples[1]["x"], data[1]["x"])


def test_a_single_dict_is_one_sample():
    (sample,) = load_samples({"x": [[1.0, 2.0, 3.0, 4.0]]}, specs_of(("x", TensorProto.DOUBLE, [1, 4])))
    assert sample["x"].dtype == np.float64


def test_bad_python_samples_are_named():
    bad = floats(1, 4)
    bad[0, 1] = np.nan
    with raises("sample 2: input 'x' holds NaN"):
        load_samples([{"x": floats(1, 4)}, {"x": floats(1, 4)}, {"x": bad}], BATCH1)
    with raises("sample 0: input 'x' is float64, the model expects float32"):
        load_samples(({"x": np.zeros((1, 4))} for _ in range(2)), BATCH1)


def test_not_a_source():
    with raises("samples: expected a path, an iterable of dicts or an object with get_next(), not int"):
        iter_samples(3, BATCH1)  # type: ignore[arg-type]
    with raises("not a bare array"):
        iter_samples(floats(1, 4), BATCH1)  # type: ignore[arg-type]


# limit, over every form


def sources(tmp_path):
    """Each form of a source holding six samples for BATCH1."""
    rows = floats(6, 4)
    np.save(tmp_path / "batched.npy", rows)
    np.save(tmp_path / "stacked.npy", rows[:, None])
    np.savez(tmp_path / "stacked.npz", x=rows[:, None])
    (tmp_path / "folder").mkdir()
    for i in range(3):
        np.save(tmp_path / "folder" / f"{i}.npy", rows[2 * i : 2 * i + 2])
    for i in range(6):
        write_set(tmp_path / "sets" / f"test_data_set_{i}", [("x", rows[i : i + 1])])
    dicts = [{"x": rows[i : i + 1]} for i in range(6)]
    return {
        "batched .npy": tmp_path / "batched.npy",
        "stacked .npy": str(tmp_path / "stacked.npy"),
        "stacked .npz": tmp_path / "stacked.npz",
        "folder": tmp_path / "folder",
        "test data sets": tmp_path / "sets",
        "list": dicts,
        "generator": (d for d in dicts),
        "reader": Reader(dicts),
    }


FORMS = ["batched .npy", "stacked .npy", "stacked .npz", "folder", "test data sets", "list", "generator", "reader"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("limit, count", [(None, 6), (4, 4), (0, 0), (10, 6)])
def test_limit_caps_the_samples_of_every_form(tmp_path, form, limit, count):
    rows = floats(6, 4)
    samples = load_samples(sources(tmp_path)[form], BATCH1, limit=limit)
    assert len(samples) == count
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["x"], rows[i : i + 1])


def test_limit_stops_asking_the_reader():
    reader = Reader([{"x": floats(1, 4)}] * 10)
    assert len(load_samples(reader, BATCH1, limit=3)) == 3
    assert reader.calls == 3
    assert load_samples(reader, BATCH1, limit=0) == [] and reader.calls == 3


def test_limit_stops_before_a_bad_sample(tmp_path):
    data = floats(4, 1, 4)
    data[3, 0, 0] = np.nan
    np.save(tmp_path / "data.npy", data)
    assert len(load_samples(tmp_path / "data.npy", BATCH1, limit=3)) == 3


def test_a_negative_limit():
    with raises("the sample limit must be at least 0, not -1"):
        iter_samples([], BATCH1, limit=-1)


# laziness


def test_a_stacked_npy_is_not_read_at_once(tmp_path):
    count, shape = 200, (1, 64, 128)  # 32 KB a sample, 6.4 MB in all
    np.save(tmp_path / "data.npy", np.ones((count, *shape), np.float32))
    tracemalloc.start()
    try:
        seen = 0
        for sample in iter_samples(tmp_path / "data.npy", specs_of(("x", F32, list(shape)))):
            assert not isinstance(sample["x"], np.memmap) and sample["x"].flags.owndata  # a copy, not a view of the file
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert peak < 1_000_000, peak  # a few samples' worth, not the 6.4 MB file


def test_a_generator_is_pulled_one_sample_at_a_time():
    pulled = []

    def samples():
        for i in range(100):
            pulled.append(i)
            yield {"x": floats(1, 4)}

    it = iter_samples(samples(), BATCH1)
    assert pulled == []
    next(it)
    next(it)
    assert pulled == [0, 1]


# describe_source


def test_describe_source(tmp_path):
    assert describe_source(tmp_path / "data.npz") == str(tmp_path / "data.npz")
    assert describe_source(Reader([])) == "Reader.get_next()"
    assert describe_source([{}, {}]) == "2 sample(s) from a Python list"
    assert describe_source(d for d in []) == "samples from a Python generator"


def test_a_scalar_input_stacked_or_given_once(tmp_path):
    """Silero VAD's `sr`: a rank-0 input, stacked as (N,) or given once for every sample."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x, sr], [y])
    specs = input_specs(helper.make_model(graph))
    audio = np.zeros((5, 1, 4), np.float32)
    np.savez(tmp_path / "stacked.npz", x=audio, sr=np.full(5, 16000, np.int64))
    np.savez(tmp_path / "once.npz", x=audio, sr=np.array(16000, np.int64))
    for name in ("stacked.npz", "once.npz"):
        samples = list(iter_samples(tmp_path / name, specs))
        assert len(samples) == 5 and all(s["sr"].shape == () and s["sr"] == 16000 for s in samples)


# split_batch: what auto reads (it holds samples out, so a row of the batch axis is a sample)


def test_split_batch_makes_each_row_of_a_dynamic_batch_a_sample(tmp_path):
    """Issue 23.5: [64, D] for an input [N, D] is 64 samples of [1, D] for auto (read a row at a
    time); calibrate, validate and gptq keep it as one run of batch 64 (every row counts there)."""
    data = floats(64, 4)
    np.save(tmp_path / "data.npy", data)
    rows = load_samples(tmp_path / "data.npy", DYNAMIC, split_batch=True)
    assert len(rows) == 64 and all(s["x"].shape == (1, 4) for s in rows)
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in rows]), data)
    assert len(load_samples(tmp_path / "data.npy", DYNAMIC)) == 1  # without it: as today
    assert len(load_samples(tmp_path / "data.npy", DYNAMIC, split_batch=True, limit=5)) == 5
    with raises(f"{tmp_path / 'data.npy'}[3]: input 'x' holds NaN"):  # a bad row is named as a stacked slice is
        data[3, 1] = np.nan
        np.save(tmp_path / "data.npy", data)
        load_samples(tmp_path / "data.npy", DYNAMIC, split_batch=True)


@pytest.mark.parametrize("specs, rows, count", [(BATCH1, 5, 5), (BATCH2, 6, 3), (BATCH1, 1, 1), (BATCH2, 2, 1)])
def test_split_batch_leaves_a_fixed_batch_as_today(tmp_path, specs, rows, count):
    """A fixed batch (1, 2, ...) keeps its rules: rows split into that batch, or the batch
    itself one sample; split_batch changes nothing there."""
    data = floats(rows, 4)
    np.save(tmp_path / "data.npy", data)
    for split_batch in (False, True):
        samples = load_samples(tmp_path / "data.npy", specs, split_batch=split_batch)
        assert len(samples) == count and all(s["x"].shape == (rows // count, 4) for s in samples)


def test_split_batch_in_npz_splits_every_input_together_or_none(tmp_path):
    specs = specs_of(("ids", I64, ["N", 3]), ("feats", F32, ["N", 2]), ("sr", I64, []))
    np.savez(tmp_path / "data.npz", ids=ids(6, 3), feats=floats(6, 2), sr=np.array(16000, np.int64))
    samples = load_samples(tmp_path / "data.npz", specs, split_batch=True)
    assert len(samples) == 6 and all(
        s["ids"].shape == (1, 3) and s["feats"].shape == (1, 2) and s["sr"] == 16000 for s in samples
    )
    np.savez(tmp_path / "data.npz", ids=ids(6, 3), feats=floats(5, 2), sr=np.array(16000, np.int64))
    assert len(load_samples(tmp_path / "data.npz", specs, split_batch=True)) == 1  # lengths differ: one run, as today
    np.savez(tmp_path / "data.npz", ids=ids(1, 3), feats=floats(1, 2))  # an input with a fixed first axis: not split
    assert len(load_samples(tmp_path / "data.npz", TWO, split_batch=True)) == 1
    unknown = [InputSpec("x", np.dtype(np.float32), ())]  # unknown rank (no shape): never split
    np.save(tmp_path / "u.npy", floats(6, 4))
    assert len(load_samples(tmp_path / "u.npy", unknown, split_batch=True)) == 1


def test_split_batch_in_a_test_data_set(tmp_path):
    data = floats(8, 4)
    folder = write_set(tmp_path / "test_data_set_0", [("x", data)])
    rows = load_samples(folder, DYNAMIC, split_batch=True)
    assert len(rows) == 8 and all(s["x"].shape == (1, 4) for s in rows)
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in rows]), data)
    assert len(load_samples(folder, DYNAMIC)) == 1
