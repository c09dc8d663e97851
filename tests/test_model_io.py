"""Loading, bad input, external data and atomic output."""

from __future__ import annotations

import mmap
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import BUILDERS

import quantrs
from quantrs import QuantizeConfig
from quantrs.errors import ModelLoadError, NonFiniteWeightError, OutputError, UnsupportedModelError
from quantrs.model import load_model


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nope\.onnx: no such file"):
        quantrs.quantize(tmp_path / "nope.onnx", tmp_path / "out.onnx")


@pytest.mark.parametrize("content", [b"", b"this is not a model at all\n" * 10, bytes(range(256)) * 3])
def test_not_onnx(tmp_path, content):
    src = tmp_path / "bad.onnx"
    src.write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"bad\.onnx: .*(not a valid ONNX|empty)"):
        quantrs.quantize(src, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_truncated_model(tmp_path, save):
    model, _ = BUILDERS["conv_net"]()
    data = save(model).read_bytes()
    src = tmp_path / "truncated.onnx"
    src.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelLoadError, match=r"truncated\.onnx"):
        quantrs.quantize(src, tmp_path / "out.onnx", QuantizeConfig(min_elements=0))
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "truncated.onnx"]


def test_no_float_weights(tmp_path, save):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    src = save(onnx.helper.make_model(graph))
    with pytest.raises((ModelLoadError, UnsupportedModelError), match=r"model\.onnx: .*(no float weights|no graph)"):
        quantrs.quantize(src, tmp_path / "out.onnx")


def test_all_weights_too_small(save, tmp_path):
    model, _ = BUILDERS["mlp"]()
    with pytest.raises(UnsupportedModelError, match=r"none of the 3 float tensors can be quantized"):
        quantrs.quantize(save(model), tmp_path / "out.onnx", QuantizeConfig(min_elements=10**9))


def test_output_equal_to_input_is_refused(save):
    model, _ = BUILDERS["mlp"]()
    src = save(model)
    before = src.read_bytes()
    with pytest.raises(OutputError, match="the output path is the input model"):
        quantrs.quantize(src, src, QuantizeConfig(min_elements=0))
    assert src.read_bytes() == before


def test_output_folder_missing(save, tmp_path):
    model, _ = BUILDERS["mlp"]()
    with pytest.raises(OutputError, match="does not exist"):
        quantrs.quantize(save(model), tmp_path / "no" / "out.onnx", QuantizeConfig(min_elements=0))


@pytest.mark.parametrize("under", ["", "sub"])  # the parent is a file, or a folder above it is
def test_output_under_a_file_says_it_is_a_file(save, tmp_path, under):
    """Issue 23 (messages): an output whose folder is a file says so, not that the folder does
    not exist; quantize refuses it before any work (check_paths), and so does the writer."""
    from quantrs.pipeline import check_paths
    from quantrs.writer import write_model

    model, _ = BUILDERS["mlp"]()
    src = save(model)
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / under / "out.onnx"
    expected = f"{tmp_path / 'notes.txt'} is a file, not a folder"
    for refuse in (lambda: check_paths(src, out), lambda: quantrs.quantize(src, out, QuantizeConfig(min_elements=0))):
        with pytest.raises(OutputError, match="is a file, not a folder") as caught:
            refuse()
        assert expected in str(caught.value) and "does not exist" not in str(caught.value)
    bare = onnx.ModelProto()
    bare.graph.name = "g"
    with pytest.raises(OutputError, match="is a file, not a folder") as caught:
        write_model(bare, [], out)
    assert expected in str(caught.value) and "does not exist" not in str(caught.value)
    assert (tmp_path / "notes.txt").read_text() == "a file"


def test_nan_weight_is_refused_and_nothing_written(save, tmp_path):
    model, _ = BUILDERS["mlp"]()
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[3, 4] = np.nan
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "w1"))
    with pytest.raises(NonFiniteWeightError, match=r"model\.onnx: w1 holds NaN") as info:
        quantrs.quantize(save(model), tmp_path / "out.onnx", QuantizeConfig(min_elements=0))
    assert str(info.value).count("model.onnx") == 1  # the file is named once
    assert info.value.file.name == "model.onnx" and info.value.tensor == "w1"  # as data, not only text
    assert any(frame.name == "minmax" for frame in info.traceback)  # re-raised, not re-made: the cause is kept
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_existing_output_is_replaced_atomically(save, tmp_path):
    model, _ = BUILDERS["mlp"]()
    dst = tmp_path / "out.onnx"
    dst.write_bytes(b"old")
    quantrs.quantize(save(model), dst, QuantizeConfig(min_elements=0))
    onnx.checker.check_model(str(dst))
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "out.onnx"]  # no temporary left behind


def _maps_a_file(array: np.ndarray) -> bool:
    """True when the array is a view of a memory-mapped file (no copy was made)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap) and not array.flags.writeable


def test_embedded_weights_are_views_of_the_mapped_file(save):
    model, _ = BUILDERS["conv_net"]()
    loaded = load_model(save(model))
    w = loaded.weights.array("conv2.w")
    assert _maps_a_file(w)
    np.testing.assert_array_equal(w, onnx.numpy_helper.to_array(model.graph.initializer[2]))
    assert not loaded.proto.graph.initializer[2].HasField("raw_data")  # the graph holds no weight bytes


def _save_external(model, folder, name="model.onnx"):
    path = folder / name
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    return path


def _mlp_with_external_data(tmp_path):
    """An MLP saved with its weights in <tmp>/m/weights.bin: (folder, model path)."""
    folder = tmp_path / "m"
    folder.mkdir()
    return folder, _save_external(BUILDERS["mlp"]()[0], folder)


def _quantize_refused(src, folder, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        quantrs.quantize(src, folder / "q.onnx", QuantizeConfig(min_elements=0))


def test_external_data_model_is_quantized(tmp_path):
    model, feeds = BUILDERS["conv_net"]()
    src = _save_external(model, tmp_path)
    loaded = load_model(src)
    assert {w.location for w in loaded.weights} == {"weights.bin"}
    assert _maps_a_file(loaded.weights.array("conv1.w"))
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, per_channel=True))
    # External data in, external data out (next to the output model).
    assert report.files_written == [str(tmp_path / "q.onnx"), str(tmp_path / "q.onnx.data")]
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    out = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, feeds)[0]
    assert np.abs(out - ref).max() < 0.03 * np.abs(ref).max()


def test_external_data_in_one_file_per_tensor(tmp_path):
    model, feeds = BUILDERS["mlp"]()
    src = tmp_path / "model.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert len(list(tmp_path.iterdir())) == 4  # the model and one file per initializer
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, bits=4, per_channel=True))
    assert report.quantized_count == 2
    ref = ort.InferenceSession(str(src)).run(None, feeds)[0]
    out = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, feeds)[0]
    assert np.abs(out - ref).max() < 0.35 * np.abs(ref).max()


def _two_data_files(folder):
    """A model whose two weights of one shape lie in two data files at the same offset: a path
    taken for the wrong file reads the other weight's bytes, which fit."""
    rng = np.random.default_rng(3)
    w1, w2 = (rng.standard_normal((16, 8)).astype(np.float32) for _ in range(2))
    for name, w in (("w1", w1), ("w2", w2)):
        (folder / f"{name}.bin").write_bytes(w.tobytes())
    inits = [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")]
    for t in inits:
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", f"{t.name}.bin"), ("offset", "0"), ("length", str(w1.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w1"], ["h"]), onnx.helper.make_node("MatMul", ["x", "w2"], ["y"])],
        "two_files",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 16])],
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 8]) for n in ("h", "y")],
        inits,
    )
    src = folder / "model.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(src))
    return src, {"w1": w1, "w2": w2}


def test_each_tensor_reads_its_own_data_file(tmp_path):
    src, weights = _two_data_files(tmp_path)
    store = load_model(src).weights
    for _ in range(2):  # the files' paths are resolved once: asked again, each is still its own
        for name, w in weights.items():
            np.testing.assert_array_equal(store.array(name), w)
            assert store.file_range(name) == (tmp_path.resolve() / f"{name}.bin", 0, w.nbytes)
            store.release(name)
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, per_channel=True))
    assert report.quantized_count == 2
    out = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": np.eye(16, dtype=np.float32)[:1]})
    for got, w in zip(out, weights.values()):
        assert np.abs(got - w[:1]).max() < 0.02 * np.abs(w).max()


def test_a_bad_location_is_refused_beside_a_good_one(tmp_path):
    src, _ = _two_data_files(tmp_path)
    (tmp_path / "w1.bin").unlink()  # w2 reads first and resolves its file; w1's is still checked
    store = load_model(src).weights
    store.array("w2")
    with pytest.raises(ModelLoadError, match="w1.bin' is missing"):
        store.array("w1")


def test_a_data_file_cut_after_a_read_is_still_refused(tmp_path):
    """A tensor's range is worked out once, but its fit in the file is checked on every ask."""
    folder, src = _mlp_with_external_data(tmp_path)
    store = load_model(src).weights
    ranges = {info.name: store.file_range(info.name) for info in store}
    last = max(ranges, key=lambda n: ranges[n][1])  # the tensor at the end of weights.bin
    store.array(last)
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: ranges[last][1]])  # cut where it starts
    for ask in (store.array, store.payload, store.file_range, store.release):
        with pytest.raises(ModelLoadError, match="does not fit"):
            ask(last)


def test_a_data_file_removed_after_a_read_is_refused_by_name(tmp_path):
    """Its path is resolved once; a file gone since is a load error naming it, not a traceback."""
    src, _ = _two_data_files(tmp_path)
    store = load_model(src).weights
    store.array("w1")
    (tmp_path / "w1.bin").unlink()
    for ask in (store.array, store.file_range, store.release):
        with pytest.raises(ModelLoadError, match="external data file 'w1.bin' of 'w1'"):
            ask("w1")
    store.array("w2")


def test_output_data_file_may_not_overwrite_the_inputs(tmp_path):
    model, _ = BUILDERS["mlp"]()
    src = tmp_path / "model.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, location="q.onnx.data", size_threshold=0)
    before = (tmp_path / "q.onnx.data").read_bytes()
    with pytest.raises(OutputError, match="its external data file q.onnx.data is the input.s external data file q.onnx.data"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0))
    assert (tmp_path / "q.onnx.data").read_bytes() == before


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    (tmp_path / "outside.bin").write_bytes(bytes(64 * 128 * 4))
    folder, src = _mlp_with_external_data(tmp_path)
    tampered = onnx.load(str(src), load_external_data=False)
    for t in tampered.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(tampered, str(src))
    _quantize_refused(src, folder, "escapes the model's folder|must be a relative path")
    assert not (folder / "q.onnx").exists()


def test_external_data_through_a_symlink_is_refused(tmp_path):
    folder, src = _mlp_with_external_data(tmp_path)
    real = tmp_path / "elsewhere.bin"
    os.replace(folder / "weights.bin", real)
    os.symlink(real, folder / "weights.bin")
    _quantize_refused(src, folder, "escapes the model's folder|symbolic link")


def test_external_data_hard_link_is_refused(tmp_path):
    folder, src = _mlp_with_external_data(tmp_path)
    os.link(folder / "weights.bin", tmp_path / "second-name.bin")
    _quantize_refused(src, folder, "hard link")


def test_external_data_shorter_than_declared(tmp_path):
    folder, src = _mlp_with_external_data(tmp_path)
    data = (folder / "weights.bin").read_bytes()
    (folder / "weights.bin").write_bytes(data[: len(data) // 2])
    _quantize_refused(src, folder, "does not fit")


def test_external_data_output_on_request(tmp_path, save):
    model, feeds = BUILDERS["mlp"]()
    report = quantrs.quantize(save(model), tmp_path / "ext.onnx", QuantizeConfig(min_elements=0, external_data=True))
    assert [p.rsplit("/", 1)[-1] for p in report.files_written] == ["ext.onnx", "ext.onnx.data"]
    ort.InferenceSession(str(tmp_path / "ext.onnx")).run(None, feeds)


def _shapeless_output_model(path) -> str:
    """A MatMul model whose graph output has a type but no shape: onnx.checker refuses it,
    onnxruntime runs it (exporters write such outputs)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "shapeless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_a_checker_problem_the_input_has_is_not_refused(tmp_path, caplog):
    """onnx.checker's complaint about the model as given is the model's: quantrs writes the
    output (it runs in onnxruntime, as the input does) and warns; validate says the same."""
    src = _shapeless_output_model(tmp_path / "m.onnx")
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(onnx.load(src))
    with caplog.at_level("WARNING", logger="quantrs.qdq"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0))
    assert "fails onnx.checker as it was given" in caplog.text
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    want, got = (ort.InferenceSession(str(p)).run(None, {"x": x})[0] for p in (src, tmp_path / "q.onnx"))
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    checks = {c.name: c for c in quantrs.validate(src, tmp_path / "q.onnx").checks}
    assert checks["onnx.checker"].passed and "as the float model does" in checks["onnx.checker"].detail


def test_a_checker_problem_of_quantrs_own_is_refused(tmp_path):
    """Only the input's own problem is tolerated: another one in the output is an error."""
    from quantrs.qdq import check_model, checker_problem

    bad = onnx.load(_shapeless_output_model(tmp_path / "m.onnx"))
    problem = checker_problem(bad)
    assert problem is not None
    check_model(bad, "m.onnx", as_given=lambda: problem)  # the input's: kept
    with pytest.raises(UnsupportedModelError, match="the quantized model fails onnx.checker"):
        check_model(bad, "m.onnx")
    with pytest.raises(UnsupportedModelError):
        check_model(bad, "m.onnx", as_given=lambda: "another problem")
