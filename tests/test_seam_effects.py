"""The effects of flags and rules that a plausible one-line mistake would silently undo (issue
24.10): a flag dropped on its way to its config, a comparison turned round, a cap removed, a
rounding or an axis changed. bench/test_mutations.py makes each mistake in a copy of the
package and checks that the test named for it fails."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from typer.testing import CliRunner

from quantrs import kernels
from quantrs.cli import app

runner = CliRunner()


def _weight_producers(path) -> dict[str, str]:
    """For each node's input of the saved model, the op type that writes it ("" for a stored
    tensor or a graph input)."""
    graph = onnx.load(str(path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return {i: producer.get(i, "") for n in graph.node for i in n.input}


def test_calibrate_exclude_op_type_keeps_that_op_types_weights_float(save, tmp_path):
    model, feeds = BUILDERS["conv_net"]()
    src = save(model)
    np.save(tmp_path / "x.npy", feeds["x"])
    common = ["calibrate", str(src), "--data", str(tmp_path / "x.npy"), "--format", "json"]
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "all.onnx")])
    assert result.exit_code == 0, result.output
    gemm = next(n for n in onnx.load(str(tmp_path / "all.onnx")).graph.node if n.op_type == "Gemm")
    assert _weight_producers(tmp_path / "all.onnx")[gemm.input[1]] == "DequantizeLinear"  # quantized unless excluded
    result = runner.invoke(app, [*common, "-o", str(tmp_path / "q.onnx"), "--exclude-op-type", "Gemm"])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    assert gemm.input[1] == "fc.w" and _weight_producers(tmp_path / "q.onnx")["fc.w"] == ""
    stored = {t.name: t for t in graph.initializer}
    assert stored["fc.w"].data_type == onnx.TensorProto.FLOAT
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert all(_weight_producers(tmp_path / "q.onnx")[n.input[1]] == "DequantizeLinear" for n in convs)  # only Gemm's are kept


def test_auto_min_top1_is_part_of_the_budget(tmp_path):
    """--min-top1 reaches the budget: a loose cosine alone is met by 4-bit weights, top-1
    agreement of 1.0 on every held-out row is not, so the run misses and exits 1."""
    from test_auto import sensitive_mlp

    src, samples = sensitive_mlp(tmp_path / "m.onnx", layers=3)
    np.save(tmp_path / "data.npy", samples)
    common = [
        "auto",
        str(src),
        "--data",
        str(tmp_path / "data.npy"),
        "--min-cosine",
        "0.5",
        "--choices",
        "4",
        "--format",
        "json",
        "-q",
    ]
    loose = runner.invoke(app, [*common, "-o", str(tmp_path / "loose.onnx")])
    assert loose.exit_code == 0, loose.output
    report = json.loads(loose.stdout)
    top1 = [o["top1_agreement"] for c in report["candidates"] for o in c["outputs"]]
    assert top1 and max(top1) < 1.0  # 4-bit weights flip some row's largest output
    strict = runner.invoke(app, [*common, "-o", str(tmp_path / "strict.onnx"), "--min-top1", "1"])
    assert strict.exit_code == 1, strict.output
    assert json.loads(strict.stdout)["budget"] == {"min_cosine": 0.5, "min_top1": 1.0}
    assert not (tmp_path / "strict.onnx").exists()


def test_auto_writes_the_smallest_of_several_candidates_that_met(tmp_path):
    """The first candidate meets the budget with room to spare (the true error is a quarter of
    the prediction), the refit allows a smaller one that meets it too: the smaller is chosen."""
    from quantrs.auto import AutoConfig, _Search, _verify
    from quantrs.report import OutputAgreement
    from quantrs.sensitivity import LayerSensitivity, Sensitivity

    layers = [
        LayerSensitivity(f"w{i}", "MatMul", {"4": 0.01, "8": 0.01 / 200, "float": 0.0}, {"4": 500, "8": 1000, "float": 4000})
        for i in range(6)
    ]
    config = AutoConfig(min_cosine=0.99, max_evaluations=6)
    search = _Search(Sensitivity(layers, [], 8, 0.0), ["4", "8", "float"], config.error_budget)
    names = [layer.name for layer in layers]
    built: list[tuple[str, ...]] = []

    def build(assignment, step):
        built.append(search.key(assignment))
        path = tmp_path / f"c{step}.onnx"
        path.write_text(str(step))
        return path

    def evaluate(path):
        r = 0.25 * search.local(dict(zip(names, built[-1])))
        return [OutputAgreement("y", 1 / np.sqrt(1 + r), 0.0, float(np.sqrt(r)), None)]

    outcome = _verify(search, config, build, evaluate)
    met = [c for c in outcome.candidates if c.met]
    assert len({c.weight_bytes for c in met}) >= 2  # the case this test is about: more than one met
    assert outcome.met and outcome.candidates[outcome.step].weight_bytes == min(c.weight_bytes for c in met)
    assert [p.name for p in tmp_path.iterdir()] == [f"c{outcome.step}.onnx"]


def test_max_relative_error_passes_below_and_fails_above():
    from quantrs.report import OutputAgreement
    from quantrs.validation import Thresholds

    def passed(relative: float) -> bool:
        (result,) = Thresholds(max_relative_l2=0.1).evaluate([OutputAgreement("y", 0.99, 0.0, relative, None)])
        return result.passed

    assert passed(0.05) and passed(0.1)  # at most the threshold passes
    assert not passed(0.2)


@pytest.mark.parametrize("layout", [[], ["--quant-format", "matmulnbits", "-b", "4"]], ids=["qdq", "matmulnbits"])
def test_threads_reach_every_kernel_call(save, tmp_path, monkeypatch, layout):
    """--threads N is the thread count each kernel is asked for (whatever the tensor's size
    then makes of it), in QDQ and in MatMulNBits form."""
    asked: list[int | None] = []
    threads = kernels._threads

    def spy(n_threads, size):
        asked.append(n_threads)
        return threads(n_threads, size)

    monkeypatch.setattr(kernels, "_threads", spy)
    src = save(BUILDERS["mlp"]()[0])
    result = runner.invoke(
        app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--min-elements", "0", "--threads", "3", *layout]
    )
    assert result.exit_code == 0, result.output
    assert asked and set(asked) == {3}


def test_available_cpus_is_capped_by_the_cgroup_quota(monkeypatch):
    """8 CPUs in the affinity mask, a quota of 1.5 CPUs: 2 threads, not 8 (the quota would
    throttle them)."""
    from quantrs import _cpus

    monkeypatch.setattr(_cpus.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    _cpus.available_cpus.cache_clear()
    try:
        monkeypatch.setattr(_cpus, "cgroup_cpu_limit", lambda: 1.5)
        assert _cpus.available_cpus() == 2
        _cpus.available_cpus.cache_clear()
        monkeypatch.setattr(_cpus, "cgroup_cpu_limit", lambda: 0.25)
        assert _cpus.available_cpus() == 1
        _cpus.available_cpus.cache_clear()
        monkeypatch.setattr(_cpus, "cgroup_cpu_limit", lambda: None)
        assert _cpus.available_cpus() == 8
    finally:
        _cpus.available_cpus.cache_clear()  # the next caller sees this machine again


def test_float16_scale_zero_points_are_the_nearest_code():
    """With float16 scales the asymmetric zero points are recomputed: to the nearest integer, so
    that every value (the range's low end included) is within half a step of its code."""
    from quantrs.tensor import quantize_tensor, scheme_for

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 48)) * rng.uniform(0.01, 2.0, (64, 1)) + rng.uniform(-1, 1, (64, 1))).astype(np.float16)
    scheme = scheme_for(8, symmetric=False, native_int4=False)
    qt = quantize_tensor(x, scheme, 0, half_scale=True)
    scale = qt.scale.astype(np.float64)
    assert np.array_equal(scale, scale.astype(np.float16).astype(np.float64))  # float16 values
    lo = np.minimum(x.astype(np.float64).min(axis=1), 0.0)
    exact = scheme.qmin - lo / scale
    assert np.all(np.abs(qt.zero_point - exact) <= 0.5)
    codes = qt.data.reshape(x.shape).astype(np.float64)
    error = np.abs((codes - qt.zero_point[:, None]) * scale[:, None] - x.astype(np.float64))
    assert np.all(error.max(axis=1) <= 0.5 * scale * (1 + 1e-6))


def test_static_8bit_blocks_become_per_output_channel(tmp_path):
    """Static INT8 with --block-size: 8-bit weights are per channel instead (onnxruntime's
    MatMulIntegerToFloat takes no blocks), one scale per output channel: a MatMul weight
    [K, N]'s axis 1."""
    import quantrs
    from quantrs import CalibrationConfig, QuantizeConfig

    model, feeds = BUILDERS["mlp"]()
    onnx.save(model, str(tmp_path / "m.onnx"))
    config = CalibrationConfig(weights=QuantizeConfig(bits=8, block_size=32, min_elements=0))
    quantrs.calibrate(tmp_path / "m.onnx", tmp_path / "q.onnx", [feeds], config)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    stored = {t.name: t for t in graph.initializer}
    dequantizers = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    for matmul in (n for n in graph.node if n.op_type == "MatMul"):
        dq = dequantizers[matmul.input[1]]
        k, n = stored[dq.input[0]].dims
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        assert attrs.get("axis", 1) == 1 and "block_size" not in attrs, (matmul.name, attrs)
        assert list(stored[dq.input[1]].dims) == [n], matmul.name
