"""Static INT8: histogram kernel, range pickers against plain numpy references, end-to-end QDQ
models in onnxruntime, flat memory over samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from model_packages import magika_model
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import quantrs
from quantrs import CalibrationConfig, QuantizeConfig
from quantrs import kernels as K
from quantrs import reference as R
from quantrs.cli import app
from quantrs.errors import ConfigError
from quantrs.ranges import NBINS, HistogramCollector, pick_range

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "small_cnn.onnx"


# Let the kernels use 2 threads on tiny arrays (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("parallel_even_when_tiny")


@settings(max_examples=80, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(1, 3000), elements=st.floats(-100, 100, width=32)),
    bins=st.integers(1, 300),
    threads=st.sampled_from([1, 2]),
)
def test_histogram_kernel_equals_twin(x, bins, threads):
    lo, hi = -50.0, 75.0  # values outside land in the end bins
    counts = K.histogram(x, lo, hi, np.zeros(bins, np.int64), n_threads=threads)
    np.testing.assert_array_equal(counts, R.histogram(x, lo, hi, bins))


def test_histogram_large_input_two_threads():
    x = np.random.default_rng(0).standard_normal(1_000_003).astype(np.float32)
    one = K.histogram(x, -3, 3, np.zeros(NBINS, np.int64), n_threads=1)
    two = K.histogram(x, -3, 3, np.zeros(NBINS, np.int64), n_threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one, R.histogram(x, -3, 3, NBINS))


def test_collector_widening_is_exact():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal(10_000).astype(np.float32) * s for s in (0.1, 1, 3, 20)]
    collector = HistogramCollector("t")
    for part in parts:
        collector.add(part)
    everything = np.concatenate(parts)
    assert collector.lo == everything.min() and collector.hi == everything.max()
    direct = R.histogram(everything, -collector.radius, collector.radius, NBINS)
    assert collector.counts.sum() == everything.size
    assert np.abs(collector.counts - direct).max() <= 2  # only values on a shared edge may differ


def collect(x: np.ndarray) -> HistogramCollector:
    collector = HistogramCollector("t")
    for part in np.array_split(x.astype(np.float32), 8):
        collector.add(part)
    return collector


def test_minmax_is_exact():
    x = np.random.default_rng(2).standard_normal(50_000)
    assert pick_range(collect(x), "minmax") == (float(x.astype(np.float32).min()), float(x.astype(np.float32).max()))


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_matches_numpy(p):
    x = np.random.default_rng(3).standard_normal(400_000).astype(np.float32)
    stats = collect(x)
    lo, hi = pick_range(stats, "percentile", percentile=p)
    want_lo, want_hi = np.percentile(x, [(100 - p) / 2, 100 - (100 - p) / 2])
    width = 2 * stats.radius / NBINS
    assert abs(lo - want_lo) <= 2 * width and abs(hi - want_hi) <= 2 * width


def quantization_mse(x: np.ndarray, threshold: float) -> float:
    """The real error of quantizing x to 255 levels over [-T, T] (numpy, no histogram)."""
    step = 2 * threshold / 254
    q = np.clip(np.rint(x / step), -127, 127)
    return float(np.mean((x - q * step) ** 2))


@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
def test_mse_pick_is_near_the_brute_force_optimum(dist):
    rng = np.random.default_rng(4)
    x = {"normal": rng.standard_normal, "laplace": lambda n: rng.laplace(size=n), "uniform": lambda n: rng.uniform(-1, 1, n)}[
        dist
    ](200_000)
    x = x.astype(np.float32).astype(np.float64)
    _, hi = pick_range(collect(x), "mse")
    grid = np.linspace(0.05, 1.0, 200) * np.abs(x).max()
    best = min(quantization_mse(x, t) for t in grid)
    assert quantization_mse(x, hi) <= best * 1.05


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_entropy_with_onnxruntimes_defaults_keeps_the_range(dist):
    """onnxruntime's entropy calibration (128 bins, 128 levels: one window, the whole histogram)
    returns min/max; ours follows it by default (tests/test_ranges.py compares the two on the
    same histograms, and with finer bins, where they clip)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(100_000) if dist == "normal" else rng.laplace(size=100_000)).astype(np.float32)
    stats = HistogramCollector("t")
    stats.add(x)
    lo, hi = pick_range(stats, "entropy")
    assert (lo, hi) == pytest.approx((float(x.min()), float(x.max())), rel=1e-6)


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def image_samples(n, shape=(1, 3, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    return [{"image": rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_cnn_is_quantized_statically_and_agrees(tmp_path, method):
    dst = tmp_path / "static.onnx"
    report = quantrs.calibrate(EXAMPLE, dst, image_samples(16), CalibrationConfig(method=method))
    assert report.samples == 16 and len(report.quantized_weights) == 7 and len(report.quantized_biases) == 7
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == len(report.activations)
    relus = [n.name for n in model.graph.node if n.op_type == "Relu"]
    assert relus == []  # the Relus after a Conv, and the residual Add's, fold into UINT8 quantizers
    biases = [t for t in model.graph.initializer if t.name.endswith(".bias_quantized")]
    assert biases and all(t.data_type == TensorProto.INT32 for t in biases)
    weights = [t for t in model.graph.initializer if t.name.endswith(".weight_quantized")]
    assert all(t.data_type == TensorProto.INT8 for t in weights)
    held_out = {"image": np.random.default_rng(99).standard_normal((16, 3, 32, 32)).astype(np.float32)}
    assert cosine(run(EXAMPLE, held_out), run(dst, held_out)) > 0.99
    assert report.fidelity_samples == 8 and report.fidelity[0].name == "probabilities" and report.fidelity[0].cosine > 0.99


def test_too_few_samples(tmp_path):
    with pytest.raises(ConfigError, match="3 calibration sample\\(s\\), at least 10 needed"):
        quantrs.calibrate(EXAMPLE, tmp_path / "out.onnx", image_samples(3), CalibrationConfig(min_samples=10))


def test_bias_scale_is_input_scale_times_weight_scale(tmp_path):
    dst = tmp_path / "static.onnx"
    quantrs.calibrate(EXAMPLE, dst, image_samples(4))
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    expected = inits["image_scale"] * inits["stem.weight_scale"]
    np.testing.assert_array_equal(inits["stem.bias_scale"], expected.astype(np.float32))


def test_reduce_range_and_symmetric_activations(tmp_path):
    dst = tmp_path / "static.onnx"
    quantrs.calibrate(EXAMPLE, dst, image_samples(8), CalibrationConfig(reduce_range=True, symmetric_activations=True))
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    assert np.abs(inits["stage3.weight_quantized"]).max() <= 63
    zero_points = [v for k, v in inits.items() if k.endswith("_zero_point")]
    assert zero_points and all(v.dtype == np.int8 and not v.any() for v in zero_points)  # weights' too (QGemm needs them)
    held_out = {"image": np.random.default_rng(7).standard_normal((8, 3, 32, 32)).astype(np.float32)}
    assert cosine(run(EXAMPLE, held_out), run(dst, held_out)) > 0.98


def encoder_block(d: int = 32, seq: int = 6):
    """Self-attention + feed-forward with residuals and LayerNorm; inputs x and an additive mask."""
    rng = np.random.default_rng(0)
    w = {n: (rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for n, s in
         (("wq", (d, d)), ("wk", (d, d)), ("wv", (d, d)), ("wo", (d, d)), ("w1", (d, 4 * d)), ("w2", (4 * d, d)))}  # fmt: skip
    w["gamma"], w["beta"] = np.ones(d, np.float32), np.zeros(d, np.float32)
    w["scale"] = np.array(1 / np.sqrt(d), np.float32)
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q"]), n("MatMul", ["x", "wk"], ["k"]), n("MatMul", ["x", "wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), n("MatMul", ["q", "kt"], ["s0"]), n("Mul", ["s0", "scale"], ["s1"]),
        n("Add", ["s1", "mask"], ["s2"]), n("Softmax", ["s2"], ["p"], axis=-1), n("MatMul", ["p", "v"], ["ctx"]),
        n("MatMul", ["ctx", "wo"], ["att"]), n("Add", ["x", "att"], ["r1"]),
        n("LayerNormalization", ["r1", "gamma", "beta"], ["h"], axis=-1),
        n("MatMul", ["h", "w1"], ["f1"]), n("Relu", ["f1"], ["f2"]), n("MatMul", ["f2", "w2"], ["f3"]),
        n("Add", ["h", "f3"], ["r2"]), n("LayerNormalization", ["r2", "gamma", "beta"], ["y"], axis=-1),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "encoder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", seq, d]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["B", 1, seq]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", seq, d])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def encoder_samples(n, seed=0, d=32, seq=6):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        mask = np.zeros((2, 1, seq), np.float32)
        mask[:, :, seq - 2 :] = -1e4 * rng.integers(0, 2, size=(2, 1, 2))
        out.append({"x": rng.standard_normal((2, seq, d)).astype(np.float32), "mask": mask})
    return out


def test_transformer_block_with_two_inputs_from_npz_folder(tmp_path):
    src = tmp_path / "encoder.onnx"
    onnx.save(encoder_block(), str(src))
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, sample in enumerate(encoder_samples(12)):
        np.savez(folder / f"{i:03d}.npz", **sample)
    dst = tmp_path / "encoder_int8.onnx"
    report = quantrs.calibrate(src, dst, folder, CalibrationConfig(method="percentile", percentile=99.99))
    assert report.samples == 12 and len(report.quantized_weights) == 6
    held_out = encoder_samples(1, seed=42)[0]
    assert cosine(run(src, held_out), run(dst, held_out)) > 0.99


def test_real_cnn_from_a_package(tmp_path):
    model = magika_model()
    files = sorted(p for p in Path(np.__file__).parent.rglob("*.py"))[:96]
    rows = np.full((len(files), 2048), 256, np.int32)
    for i, f in enumerate(files):
        head = np.frombuffer(f.read_bytes()[:2048], np.uint8)
        rows[i, : head.size] = head
    calibration = [{"bytes": rows[i : i + 4]} for i in range(0, 64, 4)]
    dst = tmp_path / "magika_static.onnx"
    report = quantrs.calibrate(model, dst, calibration, CalibrationConfig(method="minmax"))
    assert "Conv" in [n.op_type for n in onnx.load(str(model)).graph.node] and report.quantized_weights
    held_out = rows[64:]
    ref, got = run(model, {"bytes": held_out}), run(dst, {"bytes": held_out})
    assert float((ref.argmax(1) == got.argmax(1)).mean()) >= 0.9


def test_exclusions_keep_layers_float(tmp_path):
    dst = tmp_path / "static.onnx"
    report = quantrs.calibrate(
        EXAMPLE, dst, image_samples(4), CalibrationConfig(weights=QuantizeConfig(exclude_op_types=("Gemm",), exclude=("stem",)))
    )
    assert "head.weight" not in report.quantized_weights and "stem.weight" not in report.quantized_weights
    model = onnx.load(str(dst))
    head = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert head.input[1] == "head.weight" and head.input[0] == "flat"  # float weight, float input


@pytest.mark.parametrize(
    "samples, message",
    [
        ([{"image": np.zeros((1, 3, 16, 16), np.float32)}], r"sample 0: input 'image' has 16 on axis 2, the model expects 32"),
        ([{"image": np.full((1, 3, 32, 32), np.nan, np.float32)}], r"sample 0: input 'image' holds NaN"),
        ([{"picture": np.zeros((1, 3, 32, 32), np.float32)}], r"sample 0: missing input\(s\) image"),
        ([], "no calibration samples"),
    ],
)
def test_bad_samples_are_named(tmp_path, samples, message):
    with pytest.raises(ConfigError, match=message):
        quantrs.calibrate(EXAMPLE, tmp_path / "out.onnx", samples)
    assert not (tmp_path / "out.onnx").exists()


def test_cli_calibrate_json_and_errors(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    for i, sample in enumerate(image_samples(4)):
        np.save(folder / f"{i}.npy", sample["image"])
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["calibrate", str(EXAMPLE), "--data", str(folder), "-o", str(tmp_path / "s.onnx"), "--method", "mse", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "mse" and data["samples"] == 4 and data["activations"][0]["name"] == "image"
    bad = runner.invoke(
        app, ["calibrate", str(EXAMPLE), "--data", str(folder), "-o", str(tmp_path / "t.onnx"), "--method", "magic"]
    )
    assert bad.exit_code == 2 and "'--method'" in bad.stderr  # a usage error naming the flag
    quiet = runner.invoke(app, ["calibrate", str(EXAMPLE), "--data", str(folder), "-o", str(tmp_path / "u.onnx"), "-q"])
    assert quiet.exit_code == 0, quiet.output
    seen = []
    quantrs.calibrate(EXAMPLE, tmp_path / "v.onnx", image_samples(3), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 0), (2, 0), (3, 0)]  # an iterable: the total is not known


PEAK = """
import json, sys
import numpy as np
import quantrs
n = int(sys.argv[3])
samples = ({"image": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)} for i in range(n))
quantrs.calibrate(sys.argv[1], sys.argv[2], samples, quantrs.CalibrationConfig(method=sys.argv[4]))
print(json.dumps(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])))
"""


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_memory_does_not_grow_with_samples(tmp_path, method):
    def peak(n):
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(EXAMPLE), str(tmp_path / f"o{n}.onnx"), str(n), method],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        return int(out.stdout.strip().splitlines()[-1]) / 1024

    small, large = peak(10), peak(1000)
    assert large - small < 25, (small, large)  # 1000 samples of activations would be ~700 MB


def test_a_dynamic_batch_array_is_one_run_with_every_row_counted(tmp_path):
    """calibrate keeps [64, D] for an input [N, D] as one sample of batch 64 (auto splits it into
    64 samples to hold some out; samples.split_batch): the ranges are those of the 64 rows run
    one by one (to float rounding), since every row's values are in the statistics either way."""
    from test_auto import D, sensitive_mlp

    src, samples = sensitive_mlp(tmp_path / "m.onnx")
    rows = samples[:16].reshape(-1, D)  # [64, D]
    np.save(tmp_path / "rows.npy", rows)
    batch = quantrs.calibrate(src, tmp_path / "a.onnx", tmp_path / "rows.npy")
    one_by_one = quantrs.calibrate(src, tmp_path / "b.onnx", [{"x": r[None]} for r in rows])
    assert (batch.samples, one_by_one.samples) == (1, 64)
    assert [a.name for a in batch.activations] == [a.name for a in one_by_one.activations]
    for a, b in zip(batch.activations, one_by_one.activations):  # MatMul's float rounding differs by batch
        assert (a.lo, a.hi) == pytest.approx((b.lo, b.hi), rel=1e-5), a.name
