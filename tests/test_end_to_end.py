"""quantize -> onnxruntime, on models built with onnx.helper.

Two checks per model and configuration:
1. exact semantics: the quantized model's outputs equal those of the float model whose weights
   are replaced by the dequantized codes (decoded here with onnx.numpy_helper, independently of
   quantrs), within float32 rounding of the runtime;
2. fidelity: outputs stay close to the float model's. Stated tolerances, as a fraction of the
   largest float output: INT8 per-tensor 6%, per-channel 3%; INT4 per-channel 35%, per-tensor
   70% (4 bits per tensor is coarse; these models' channels differ in scale by up to 20x).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from builders import BUILDERS
from onnx import numpy_helper

import quantrs
from quantrs import QuantizeConfig

TOLERANCE = {(8, False): 0.06, (8, True): 0.03, (4, True): 0.35, (4, False): 0.70}
CONFIGS = list(itertools.product([8, 4], [False, True], [False, True]))


def run(path, feeds) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _decode(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int) -> np.ndarray:
    q = q.astype(np.float32)
    zp = zp.astype(np.float32)
    if scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q - zp) * scale).astype(np.float32)


def dequantized_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Decode every DequantizeLinear on initializers with numpy_helper (INT4 via ml_dtypes), and
    every table read gather-first (its codes, `<table>_scale` and `<table>_zero_point`, one
    scale per row)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        scale = inits[node.input[1]]
        zp = inits[node.input[2]] if len(node.input) > 2 else np.zeros_like(scale)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        out[node.output[0]] = _decode(inits[node.input[0]], scale, zp, axis)
    for node in model.graph.node:
        codes = node.input[0] if node.op_type == "Gather" and node.input else ""
        if codes.endswith("_quantized") and codes in inits and codes[: -len("_quantized")] not in out:
            table = codes[: -len("_quantized")]
            scale = inits[f"{table}_scale"]
            zp = inits.get(f"{table}_zero_point", np.zeros_like(scale))
            out[table] = _decode(inits[codes], scale, zp, 0)
    return out


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for t in copy.graph.initializer:
        if t.name in weights:
            t.CopyFrom(numpy_helper.from_array(weights[t.name], t.name))
    return copy


@pytest.mark.parametrize("bits, per_channel, symmetric", CONFIGS, ids=lambda v: str(v))
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_quantized_model_runs_and_matches(name, bits, per_channel, symmetric, save, tmp_path):
    model, feeds = BUILDERS[name]()
    src = save(model)
    before = src.read_bytes()
    dst = tmp_path / "out.onnx"
    config = QuantizeConfig(bits=bits, per_channel=per_channel, symmetric=symmetric, min_elements=0)
    report = quantrs.quantize(src, dst, config)

    assert src.read_bytes() == before  # the input is never modified
    quantized = onnx.load(str(dst))
    onnx.checker.check_model(quantized, full_check=True)
    assert [i.name for i in quantized.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in quantized.graph.output] == [o.name for o in model.graph.output]
    assert report.quantized_count >= 1

    reference = run(save(with_weights(model, dequantized_weights(quantized)), "dequantized.onnx"), feeds)
    got = run(dst, feeds)
    expected = run(src, feeds)
    for g, r, e in zip(got, reference, expected):
        scale = np.abs(e).max()
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5 * scale)
        assert np.abs(g - e).max() <= TOLERANCE[bits, per_channel] * scale


@pytest.mark.parametrize(
    "bits, symmetric, storage, opset",
    [(8, True, "INT8", 13), (8, False, "UINT8", 13), (4, True, "INT4", 21), (4, False, "UINT4", 21)],
)
def test_storage_types_and_opset(bits, symmetric, storage, opset, save, tmp_path):
    model, _ = BUILDERS["conv_net"]()
    dst = tmp_path / "q.onnx"
    report = quantrs.quantize(save(model), dst, QuantizeConfig(bits=bits, symmetric=symmetric, per_channel=True, min_elements=0))
    out = onnx.load(str(dst))
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in out.graph.initializer if t.name.endswith("_quantized")}
    assert types == {storage}
    assert report.opset_after == opset and out.opset_import[0].version == opset
    assert report.opset_converted == (opset != 13)
    zero_points = [t for t in out.graph.initializer if t.name.endswith("_zero_point")]
    assert (not zero_points) == symmetric  # symmetric codes need no zero point
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta["quantrs.bits"] == str(bits) and meta["quantrs.storage"] == storage


def test_int4_file_is_about_eight_times_smaller(tmp_path, save):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 512])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(w, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    src = save(model)
    r4 = quantrs.quantize(src, tmp_path / "q4.onnx", QuantizeConfig(bits=4, per_channel=True))
    r8 = quantrs.quantize(src, tmp_path / "q8.onnx", QuantizeConfig(bits=8, per_channel=True))
    r4w = quantrs.quantize(src, tmp_path / "q4w.onnx", QuantizeConfig(bits=4, per_channel=True, native_int4=False))
    assert r4.compression > 7.5 and r8.compression > 3.9
    assert 3.9 < r4w.compression < 4.1 and r4w.opset_after == 13 and r4w.storage == "UINT8"
    x = {"x": rng.standard_normal((1, 512)).astype(np.float32)}
    for r in (r4, r4w):
        out = run(r.output, x)[0]
        assert np.abs(out - x["x"] @ w).max() < 0.3 * np.abs(x["x"] @ w).max()
    # Widened INT4 holds exactly the same codes as packed INT4, so both models agree.
    np.testing.assert_allclose(run(r4.output, x)[0], run(r4w.output, x)[0], rtol=1e-5, atol=1e-5)


def test_opset_conversion_keeps_model_working(save, tmp_path):
    # Opset 11 model: Squeeze takes `axes` as an attribute there and as an input from opset 13.
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 32)) * 0.1).astype(np.float32)
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
            onnx.helper.make_node("Unsqueeze", ["h"], ["u"], axes=[0]),
            onnx.helper.make_node("Squeeze", ["u"], ["y"], axes=[0]),
        ],
        "old",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 32])],
        [numpy_helper.from_array(w, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 11)])
    model.ir_version = 6
    src = save(model)
    feeds = {"x": rng.standard_normal((2, 64)).astype(np.float32)}
    for bits, expected_opset in ((8, 13), (4, 21)):
        dst = tmp_path / f"q{bits}.onnx"
        report = quantrs.quantize(src, dst, QuantizeConfig(bits=bits, per_channel=True))
        assert report.opset_before == 11 and report.opset_after == expected_opset
        out = onnx.load(str(dst))
        squeeze = next(n for n in out.graph.node if n.op_type == "Squeeze")
        assert len(squeeze.input) == 2  # converted, not just renumbered
        meta = {p.key: p.value for p in out.metadata_props}
        assert meta["quantrs.opset_converted_from"] == "11"
        expected = run(src, feeds)[0]
        tolerance = TOLERANCE[bits, True] * np.abs(expected).max()
        assert np.abs(run(dst, feeds)[0] - expected).max() <= tolerance


def test_per_tensor_int8_keeps_opset_10(save, tmp_path):
    model, feeds = BUILDERS["mlp"]()
    model.opset_import[0].version = 10
    src = save(model)
    report = quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(per_channel=False, min_elements=0))
    assert report.opset_after == 10 and not report.opset_converted
    run(tmp_path / "q.onnx", feeds)


def test_existing_metadata_and_producer_are_kept(save, tmp_path):
    model, _ = BUILDERS["mlp"]()
    onnx.helper.set_model_props(model, {"author": "someone", "quantrs.bits": "stale"})
    report = quantrs.quantize(save(model), tmp_path / "q.onnx", QuantizeConfig(min_elements=0))
    out = onnx.load(report.output)
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta["author"] == "someone" and meta["quantrs.bits"] == "8"
    assert out.producer_name == "quantrs-tests"


def test_report_lists_every_initializer_with_reasons(save, tmp_path):
    model, _ = BUILDERS["shared_weight"]()
    report = quantrs.quantize(save(model), tmp_path / "q.onnx", QuantizeConfig(per_channel=True, min_elements=0))
    by_name = {t.name: t for t in report.tensors}
    assert set(by_name) == {"w", "tied"}
    assert by_name["w"].quantized and by_name["w"].axis == 1
    assert by_name["tied"].quantized and by_name["tied"].axis is None  # one scale for both its users
    assert "per tensor: its uses need different channel axes" in by_name["tied"].reason
    assert by_name["w"].mse is not None and by_name["w"].mse > 0
