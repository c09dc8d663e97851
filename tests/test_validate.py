"""validate, benchmark and the HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import BUILDERS
from model_packages import magika_model
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig, Thresholds
from quantrs.cli import app
from quantrs.errors import ConfigError

runner = CliRunner()


def three_layer_mlp():
    """x -> fc1 -> Relu -> fc2 -> Relu -> fc3."""
    rng = np.random.default_rng(5)
    inits = {}
    for name, shape in (("fc1", (32, 64)), ("fc2", (64, 64)), ("fc3", (64, 10))):
        inits[name] = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "fc1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "fc2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("MatMul", ["r2", "fc3"], ["y"], name="fc3"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture
def broken_pair(tmp_path):
    """A correct INT8 model whose fc2 layer is then deliberately broken: its per-channel scales
    are shuffled (still finite and positive, so the structure checks pass)."""
    src = tmp_path / "float.onnx"
    onnx.save(three_layer_mlp(), str(src))
    dst = tmp_path / "int8.onnx"
    quantrs.quantize(src, dst, QuantizeConfig(min_elements=0, per_channel=True))
    model = onnx.load(str(dst))
    scale = next(t for t in model.graph.initializer if t.name == "fc2_scale")
    shuffled = np.random.default_rng(0).permutation(numpy_helper.to_array(scale) * np.linspace(0.2, 3, 64, dtype=np.float32))
    scale.CopyFrom(numpy_helper.from_array(shuffled.astype(np.float32), "fc2_scale"))
    onnx.save(model, str(dst))
    return src, dst


def test_broken_layer_is_ranked_first_and_excluding_it_passes(broken_pair):
    src, dst = broken_pair
    report = quantrs.validate(src, dst, detailed=True, thresholds=Thresholds(min_cosine=0.999))
    assert all(c.passed for c in report.checks)
    assert not report.passed and not report.thresholds[0].passed
    assert [layer.name for layer in report.layers][0] == "fc2"
    assert report.layers[0].local_sqnr_db < report.layers[1].local_sqnr_db - 10
    assert report.suggested_exclude == ["fc2"]
    assert report.suggested_outputs[0].cosine >= 0.999
    # Quantized again the right way (or without that layer), the model passes.
    for excluded in ((), tuple(report.suggested_exclude)):
        fixed = dst.with_name("fixed.onnx")
        quantrs.quantize(src, fixed, QuantizeConfig(min_elements=0, per_channel=True, exclude=excluded))
        assert quantrs.validate(src, fixed, thresholds=Thresholds(min_cosine=0.999)).passed


def test_cli_exit_code_says_which_threshold_was_missed(broken_pair):
    src, dst = broken_pair
    result = runner.invoke(app, ["validate", str(src), str(dst), "--min-cosine", "0.999"])
    assert result.exit_code == 1
    assert "min_cosine: y" in result.stdout and "MISSED" in result.stdout and "VALIDATION FAILED" in result.stdout
    ok = runner.invoke(app, ["validate", str(src), str(dst), "--min-cosine", "0.5"])
    assert ok.exit_code == 0 and "VALIDATION PASSED" in ok.stdout


def test_json_has_the_same_data(broken_pair):
    src, dst = broken_pair
    result = runner.invoke(app, ["validate", str(src), str(dst), "--detailed", "--min-cosine", "0.999", "--format", "json"])
    data = json.loads(result.stdout)
    assert set(data) >= {
        "original",
        "quantized",
        "checks",
        "outputs",
        "thresholds",
        "layers",
        "suggested_exclude",
        "passed",
        "samples",
    }
    assert data["passed"] is False and data["samples"] == 8
    assert {c["name"] for c in data["checks"]} >= {"inputs unchanged", "outputs unchanged", "onnx.checker", "runs in onnxruntime"}
    output = data["outputs"][0]
    assert set(output) == {"name", "cosine", "max_abs_error", "relative_l2", "top1_agreement"}
    assert isinstance(output["cosine"], float) and 0 <= output["top1_agreement"] <= 1
    layer = data["layers"][0]
    assert set(layer) == {
        "name",
        "storage",
        "consumer",
        "weight_mse",
        "weight_sqnr_db",
        "local_relative_l2",
        "local_sqnr_db",
        "note",
    }
    assert layer["name"] == "fc2" and data["suggested_exclude"] == ["fc2"]
    assert data["thresholds"][0] == {
        "name": "min_cosine",
        "limit": 0.999,
        "output": "y",
        "value": data["outputs"][0]["cosine"],
        "passed": False,
    }


def test_structure_problems_are_found(tmp_path, save):
    model, _ = BUILDERS["mlp"]()
    src = save(model)
    dst = tmp_path / "q.onnx"
    quantrs.quantize(src, dst, QuantizeConfig(min_elements=0))
    tampered = onnx.load(str(dst))
    scale = next(t for t in tampered.graph.initializer if t.name == "w1_scale")
    scale.CopyFrom(numpy_helper.from_array(np.array(np.nan, np.float32), "w1_scale"))
    tampered.graph.output[0].name = "renamed"
    tampered.graph.node[-1].output[0] = "renamed"
    bad = tmp_path / "bad.onnx"
    onnx.save(tampered, str(bad))
    report = quantrs.validate(src, bad)
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "outputs unchanged" in failed
    assert "scales hold NaN" in failed["DequantizeLinear nodes well-formed"]
    assert not report.passed


def test_samples_from_npz_and_folder_and_their_errors(tmp_path, save):
    model, feeds = BUILDERS["embedding"]()
    src = save(model)
    dst = tmp_path / "q.onnx"
    quantrs.quantize(src, dst, QuantizeConfig(min_elements=0, per_channel=True))
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"s{i}.npz", ids=np.random.default_rng(i).integers(0, 200, (2, 5)))
    report = quantrs.validate(src, dst, data=folder)
    assert report.samples == 3 and report.outputs[0].cosine > 0.99
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(ConfigError, match=r"wrong\.npy: input 'ids' is float32, the model expects int64"):
        quantrs.validate(src, dst, data=tmp_path / "wrong.npy")
    np.savez(tmp_path / "missing.npz", other=np.zeros((2, 5), np.int64))
    with pytest.raises(ConfigError, match=r"missing\.npz: missing input\(s\) ids"):
        quantrs.validate(src, dst, data=tmp_path / "missing.npz")
    result = runner.invoke(app, ["validate", str(src), str(dst), "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere: no such samples file or folder" in result.stderr


def test_generated_inputs_respect_token_ids(tmp_path, save):
    model, _ = BUILDERS["embedding"]()  # ids feed a 200-row table, with symbolic B and T dims
    src = save(model)
    dst = tmp_path / "q.onnx"
    quantrs.quantize(src, dst, QuantizeConfig(min_elements=0))
    report = quantrs.validate(src, dst, samples=3)
    assert report.passed and report.outputs[0].cosine > 0.99


def test_html_report_renders(broken_pair, tmp_path):
    pytest.importorskip("matplotlib")
    src, dst = broken_pair
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["validate", str(src), str(dst), "--min-cosine", "0.999", "--report", str(page)])
    assert result.exit_code == 1  # the threshold is still missed; the report is written anyway
    text = page.read_text()
    assert text.startswith("<!doctype html>") and "FAILED" in text
    assert text.count("data:image/png;base64,") >= 2  # the ranking chart and distributions
    assert "fc2" in text and "<script" not in text  # self-contained, no external resources


def test_benchmark_reports_sizes_and_latency(broken_pair):
    src, dst = broken_pair
    report = quantrs.benchmark(src, dst, runs=5, warmup=1, threads=1)
    assert report.compression > 2
    assert report.original.weight_bytes_by_dtype == {"FLOAT": (32 * 64 + 64 * 64 + 64 * 10) * 4}
    assert report.quantized.weight_bytes_by_dtype["UINT8"] == 32 * 64 + 64 * 64 + 64 * 10 + 64 + 64 + 10  # codes + zero points
    for timing in (report.original, report.quantized):
        assert 0 < timing.latency_ms_p10 <= timing.latency_ms_median <= timing.latency_ms_p90
        assert timing.load_seconds > 0
    result = runner.invoke(app, ["benchmark", str(src), str(dst), "--runs", "3", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["runs"] == 3 and data["compression"] > 2 and "latency_ms_median" in data["quantized"]


def test_real_model_validates_end_to_end(tmp_path):
    model = magika_model()
    dst = tmp_path / "magika_int8.onnx"
    quantrs.quantize(model, dst, QuantizeConfig(per_channel=True))
    files = sorted(p for p in Path(np.__file__).parent.rglob("*.py"))[:16]
    batch = np.full((len(files), 2048), 256, np.int32)
    for i, f in enumerate(files):
        head = np.frombuffer(f.read_bytes()[:2048], np.uint8)
        batch[i, : head.size] = head
    np.save(tmp_path / "bytes.npy", batch)
    report = quantrs.validate(
        model, dst, data=tmp_path / "bytes.npy", detailed=True, thresholds=Thresholds(min_cosine=0.99, min_top1=0.9)
    )
    assert report.passed, report.thresholds
    assert len(report.layers) == 3 and all(
        layer.local_sqnr_db is not None and layer.local_sqnr_db > 20 for layer in report.layers
    )


def test_benchmark_says_which_weights_onnxruntime_fuses(tmp_path, save):
    """onnxruntime fuses DequantizeLinear -> MatMul into MatMulNBits (weight-only MatMul models
    run faster than float); a Conv's weights are dequantized at every run."""
    from builders import BUILDERS

    mlp = save(BUILDERS["mlp"]()[0], "mlp.onnx")
    quantrs.quantize(mlp, tmp_path / "mlp_q.onnx", QuantizeConfig(per_channel=True, min_elements=0))
    assert quantrs.benchmark(mlp, tmp_path / "mlp_q.onnx", runs=2, warmup=0).runtime_ops.get("MatMulNBits", 0) >= 1
    cnn = save(BUILDERS["conv_net"]()[0], "cnn.onnx")
    quantrs.quantize(cnn, tmp_path / "cnn_q.onnx", QuantizeConfig(per_channel=True, min_elements=0, exclude_op_types=("Gemm",)))
    assert quantrs.benchmark(cnn, tmp_path / "cnn_q.onnx", runs=2, warmup=0).runtime_ops == {"DequantizeLinear": 2}


def test_progress_is_reported_and_quiet_is_accepted(broken_pair, tmp_path):
    src, dst = broken_pair
    seen = []
    quantrs.validate(src, dst, samples=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]  # 3 samples through each model
    seen.clear()
    quantrs.benchmark(src, dst, runs=2, warmup=1, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6) and len(seen) == 6
    for args in (["validate", str(src), str(dst), "-q"], ["benchmark", str(src), str(dst), "--runs", "2", "-q"]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output  # validate may miss no threshold: 0


@pytest.mark.parametrize("bits, symmetric", [(4, False), (4, True), (8, False), (8, True)])
def test_matmulnbits_and_gather_block_weights_are_ranked(tmp_path, save, bits, symmetric):
    """validate --detailed ranks the weights onnxruntime's MatMulNBits and GatherBlockQuantized
    hold like any other. Their dequantized values are what onnxruntime computes: the MatMul
    weight the QDQ form's DequantizeLinear gives, exactly, and the table what the model's own
    lookup of every row returns. A broken one (its scales shuffled) is ranked first, and putting
    it back in float (the original MatMul) passes."""
    import onnxruntime as ort
    from test_gather_block import V, table_model

    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights

    model, feeds = table_model()
    src = save(model)
    common = dict(bits=bits, symmetric=symmetric, block_size=32, min_elements=0)
    quantrs.quantize(src, tmp_path / "qdq.onnx", QuantizeConfig(**common))
    quantrs.quantize(src, tmp_path / "nb.onnx", QuantizeConfig(**common, quant_format="matmulnbits"))
    orig = load_model(src)
    fused = dequantized_weights(orig, load_model(tmp_path / "nb.onnx"))
    assert sorted(fused) == ["emb", "w"]
    assert [fused[n][0].op_type for n in ("emb", "w")] == ["GatherBlockQuantized", "MatMulNBits"]
    np.testing.assert_array_equal(fused["w"][1], dequantized_weights(orig, load_model(tmp_path / "qdq.onnx"))["w"][1])
    session = ort.InferenceSession(str(tmp_path / "nb.onnx"), providers=["CPUExecutionProvider"])
    every_row = session.run(["rows"], {"ids": np.arange(V, dtype=np.int64)[None]})[0][0]
    np.testing.assert_array_equal(fused["emb"][1], every_row)

    broken = onnx.load(str(tmp_path / "nb.onnx"))
    node = next(n for n in broken.graph.node if n.op_type == "MatMulNBits")
    scale = next(t for t in broken.graph.initializer if t.name == node.input[2])
    shuffled = np.random.default_rng(0).permutation(numpy_helper.to_array(scale).reshape(-1) * 3)
    scale.CopyFrom(numpy_helper.from_array(shuffled.astype(np.float32).reshape(numpy_helper.to_array(scale).shape), scale.name))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    np.save(tmp_path / "ids.npy", feeds["ids"][None])
    report = quantrs.validate(
        src, tmp_path / "broken.onnx", data=tmp_path / "ids.npy", detailed=True, thresholds=Thresholds(min_cosine=0.999)
    )
    assert [(layer.name, layer.storage) for layer in report.layers][0] == ("w", f"UINT{bits} (MatMulNBits)")
    assert report.layers[0].local_relative_l2 > 10 * report.layers[1].local_relative_l2
    assert report.layers[1].storage.endswith("(GatherBlockQuantized)")
    # Back in float: w, and at 4 bits the table too (the looked-up rows are an output, whose
    # cosine 4-bit codes keep below 0.999): the lookup becomes a Gather of the float table again.
    assert report.suggested_exclude == (["w", "emb"] if bits == 4 else ["w"]), report.suggested_exclude
    assert all(o.cosine >= 0.999 for o in report.suggested_outputs)
    checked = next(c for c in report.checks if c.name == "DequantizeLinear nodes well-formed")
    assert "2 MatMulNBits/GatherBlockQuantized node(s)" in checked.detail, checked.detail


@pytest.mark.parametrize(
    "options",
    [
        dict(bits=4, block_size=32),
        dict(bits=8, per_channel=True),
        dict(bits=4, per_channel=True, symmetric=True),
        dict(bits=8, per_channel=False),
    ],
)
def test_qdq_lookup_tables_are_ranked(tmp_path, save, options):
    """A table looked up in QDQ form (a Gather of its codes, per-row or blocked scales, then a
    DequantizeLinear of the rows) is ranked like any weight: dequantized whole, it is what the
    model's own lookup of every row returns; put back in float for the suggestion, the lookup
    becomes the original Gather again."""
    import onnxruntime as ort
    from test_gather_block import V, table_model

    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights

    model, feeds = table_model()
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, **options))
    table = dequantized_weights(load_model(src), load_model(tmp_path / "q.onnx"))["emb"][1]
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(table, session.run(["rows"], {"ids": np.arange(V, dtype=np.int64)[None]})[0][0])
    np.save(tmp_path / "ids.npy", feeds["ids"][None])
    report = quantrs.validate(
        src, tmp_path / "q.onnx", data=tmp_path / "ids.npy", detailed=True, thresholds=Thresholds(min_cosine=0.99999)
    )
    assert sorted(layer.name for layer in report.layers) == ["emb", "w"]
    assert report.suggested_exclude is not None and "emb" in report.suggested_exclude, report.suggestion_note
    assert all(o.cosine >= 0.99999 for o in report.suggested_outputs)


def two_readers_model():
    """ids -> two lookups of one table (emb) -> two MatMuls with one weight (w): every weight
    read twice."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((300, 96)).astype(np.float32), "emb"),
        numpy_helper.from_array((rng.standard_normal((96, 48)) / 10).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["rows1"], axis=0, name="look1"),
        helper.make_node("Gather", ["emb", "ids2"], ["rows2"], axis=0, name="look2"),
        helper.make_node("MatMul", ["rows1", "w"], ["y1"], name="proj1"),
        helper.make_node("MatMul", ["rows2", "w"], ["y2"], name="proj2"),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [f"B{n}", f"S{n}"]) for n in ("ids", "ids2")]
    outs = [
        helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["Bids", "Sids", 48]),
        helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["Bids2", "Sids2", 48]),
        helper.make_tensor_value_info("rows1", TensorProto.FLOAT, ["Bids", "Sids", 96]),
    ]
    model = helper.make_model(helper.make_graph(nodes, "two", ids, outs, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"ids": rng.integers(0, 300, (2, 7)).astype(np.int64), "ids2": rng.integers(0, 300, (2, 5)).astype(np.int64)}
    return model, feeds


@pytest.mark.parametrize(
    "case",
    ["two readers", "tie gemm", "tie transpose", "float16 table", "bfloat16 table"],
)
@pytest.mark.parametrize(
    "options",
    [dict(bits=4, block_size=32, quant_format="matmulnbits"), dict(bits=4, block_size=32), dict(bits=8, per_channel=True)],
)
def test_every_weight_put_back_gives_the_original_outputs(tmp_path, save, case, options):
    """The suggestion's mechanism, at its limit: with every ranked weight put back in float, the
    model computes exactly what the original does, whatever reads the weights (two lookups and
    two MatMuls of one weight, a table tied to the output projection, tables cast back from
    float16/bfloat16 lookups)."""
    import onnxruntime as ort
    from test_gather_block import table_model

    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights, float_replacements
    from quantrs.validation import _with_float_weights

    if case == "two readers":
        model, feeds = two_readers_model()
    else:
        tie = {"tie gemm": "gemm", "tie transpose": "transpose"}.get(case)
        dtype = {"float16 table": TensorProto.FLOAT16, "bfloat16 table": TensorProto.BFLOAT16}.get(case, TensorProto.FLOAT)
        model, feeds = table_model(tie=tie, dtype=dtype)
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, **options))
    orig, quant = load_model(src), load_model(tmp_path / "q.onnx")
    ranked = sorted(dequantized_weights(orig, quant))
    assert "emb" in ranked and "w" in ranked, ranked
    replacements, partial = float_replacements(orig, quant)
    assert not partial
    hybrid = _with_float_weights(onnx.load(str(tmp_path / "q.onnx")), orig, ranked, replacements)
    onnx.checker.check_model(hybrid, full_check=True)
    options_ = ort.SessionOptions()
    options_.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = lambda m: ort.InferenceSession(m, options_, providers=["CPUExecutionProvider"]).run(None, feeds)  # noqa: E731
    for got, want in zip(run(hybrid.SerializeToString()), run(str(src))):
        np.testing.assert_array_equal(got, want)


def test_onnxruntimes_own_matmulnbits_models_are_read_as_it_runs_them(tmp_path, save):
    """A model written by onnxruntime's MatMulNBitsQuantizer, not quantrs: the weight
    dequantized_weights reads from it is what onnxruntime computes with it (the identity matrix
    times the weight), asymmetric and symmetric; and a NaN scale is reported."""
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights

    rng = np.random.default_rng(4)
    k, n = 80, 24
    w = rng.standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n])],
        [numpy_helper.from_array(w, "w")],
    )
    src = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    for symmetric in (False, True):
        theirs = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=32, is_symmetric=symmetric)
        theirs.process()
        theirs.model.save_model_to_file(str(tmp_path / "ort.onnx"))
        session = ort.InferenceSession(str(tmp_path / "ort.onnx"), providers=["CPUExecutionProvider"])
        computed = session.run(["y"], {"x": np.eye(k, dtype=np.float32)})[0]
        got = dequantized_weights(load_model(src), load_model(tmp_path / "ort.onnx"))
        np.testing.assert_allclose(got["w"][1], computed, rtol=0, atol=1e-6 * float(np.abs(w).max()))
    model = onnx.load(str(tmp_path / "ort.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    scale = next(t for t in model.graph.initializer if t.name == node.input[2])
    values = numpy_helper.to_array(scale).copy()
    values.reshape(-1)[0] = np.nan
    scale.CopyFrom(numpy_helper.from_array(values, scale.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    report = quantrs.validate(src, tmp_path / "nan.onnx", data=None, thresholds=Thresholds())
    checked = next(c for c in report.checks if c.name == "DequantizeLinear nodes well-formed")
    assert not checked.passed and "NaN" in checked.detail


@pytest.mark.parametrize("zero_points", [True, False])
def test_gather_block_quantized_with_codes_packed_in_bytes(tmp_path, zero_points):
    """GatherBlockQuantized also takes UINT8 data with bits=4 (two codes a byte, low nibble
    first; zero points packed alike, or its default 8): read as onnxruntime looks it up."""
    from quantrs.model import load_model
    from quantrs.dequantize import dequantized_weights

    import onnxruntime as ort

    rng = np.random.default_rng(8)
    rows, width = 20, 64
    codes = rng.integers(0, 16, (rows, width)).astype(np.uint8)
    zps = rng.integers(0, 16, (rows, 2)).astype(np.uint8)
    inits = [
        numpy_helper.from_array((codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8), "emb_q"),
        numpy_helper.from_array(rng.uniform(0.1, 1, (rows, 2)).astype(np.float32), "emb_s"),
    ] + ([numpy_helper.from_array((zps[:, :1] | (zps[:, 1:] << 4)).astype(np.uint8), "emb_z")] if zero_points else [])
    ids = [helper.make_tensor_value_info("ids", TensorProto.INT64, [rows])]
    out = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [rows, width])]
    table = numpy_helper.from_array(rng.standard_normal((rows, width)).astype(np.float32), "emb")
    original = helper.make_model(
        helper.make_graph([helper.make_node("Gather", ["emb", "ids"], ["rows"])], "g", ids, out, [table])
    )
    node = helper.make_node(
        "GatherBlockQuantized", ["emb_q", "ids", "emb_s"] + (["emb_z"] if zero_points else []), ["rows"],
        domain="com.microsoft", bits=4, block_size=32, gather_axis=0, quantize_axis=1,
    )  # fmt: skip
    quantized = helper.make_model(
        helper.make_graph([node], "g", ids, out, inits),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    for model, name in ((original, "o.onnx"), (quantized, "q.onnx")):
        model.ir_version = 8
        onnx.save(model, str(tmp_path / name))
    looked_up = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        ["rows"], {"ids": np.arange(rows, dtype=np.int64)}
    )[0]
    got = dequantized_weights(load_model(tmp_path / "o.onnx"), load_model(tmp_path / "q.onnx"))
    np.testing.assert_array_equal(got["emb"][1], looked_up)
