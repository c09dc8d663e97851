"""Error-compensated rounding (--rounding gptq, quantrs.gptq): the compiled row kernel equals its
numpy twin bit for bit; the factor is the damped inverse Hessian's; compensated codes lower the
layer's output error on the samples' activations, with the scales `quantize` computes anyway;
and end to end the written model runs in onnxruntime closer to the float model than rounding
to nearest, on held-out inputs, for QDQ and MatMulNBits, MatMul and Gemm, 4 and 8 bits."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import quantrs
from quantrs import QuantizeConfig, gptq
from quantrs import kernels as K
from quantrs import reference as R
from quantrs.calibration import CalibrationConfig
from quantrs.cli import app
from quantrs.errors import ConfigError, OptionError
from quantrs.sensitivity import dequantize
from quantrs.tensor import quantize_matmulnbits, quantize_tensor, scheme_for

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("parallel_even_when_tiny")

QRANGES = [(0, 15), (-8, 7), (0, 255), (-127, 127)]


@st.composite
def batches(draw):
    """One batch of rows: w [b, N], an upper factor u with a positive diagonal, per-group
    scales and zero points, and each row's group."""
    b = draw(st.integers(1, 24))
    n = draw(st.sampled_from([1, 3, 17, 255, 256, 257, 600]))  # across the kernel's 256-column tasks
    groups = draw(st.integers(1, 4))
    qmin, qmax = draw(st.sampled_from(QRANGES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = rng.standard_normal((b, n)) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    u = np.triu(rng.standard_normal((b, b)) * 0.3)
    np.fill_diagonal(u, rng.uniform(0.05, 2.0, b))
    scale = rng.uniform(1e-3, 0.5, (groups, n)).astype(np.float32)
    zero_point = rng.integers(qmin, qmax + 1, (groups, n)).astype(np.int32)
    group = rng.integers(0, groups, b).astype(np.int32)
    return w, u, scale, zero_point, group, qmin, qmax


@settings(max_examples=200, deadline=None)
@given(case=batches(), threads=st.sampled_from([1, 2]))
def test_the_row_kernel_equals_its_numpy_twin_bit_for_bit(case, threads):
    w, u, scale, zero_point, group, qmin, qmax = case
    codes, err, corrected = R.compensate_rows(w, u, scale, zero_point, group, qmin, qmax)
    got_w = w.copy()
    got_codes, got_err = K.compensate_rows(got_w, u, scale, zero_point, group, qmin, qmax, n_threads=threads)
    np.testing.assert_array_equal(got_codes, codes)
    assert got_err.tobytes() == err.tobytes()
    assert got_w.tobytes() == corrected.tobytes()
    # Codes are QuantizeLinear's of the corrected rows: saturated, in range, half to even.
    values = got_codes.view(np.int8) if qmin < 0 else got_codes
    assert values.min() >= qmin and values.max() <= qmax


def test_the_row_kernel_rounds_half_to_even_and_saturates():
    w = np.array([[0.5, 1.5, 2.5, -0.5, 100.0, -100.0]])
    u = np.ones((1, 1))
    scale = np.ones((1, 6), np.float32)
    codes, _ = K.compensate_rows(w.copy(), u, scale, np.zeros((1, 6), np.int32), np.zeros(1, np.int32), -8, 7)
    assert codes.view(np.int8).tolist() == [[0, 2, 2, 0, 7, -8]]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(w=a["w"].astype(np.float32)), "float64"),
        (lambda a: a.update(u=np.ones((3, 3))), r"u must be \[2, 2\]"),
        (lambda a: a.update(u=-np.eye(2)), "diagonal"),
        (lambda a: a.update(scale=np.zeros((1, 4), np.float32)), "positive"),
        (lambda a: a.update(group=np.array([0, 1], np.int32)), "group"),
    ],
)
def test_the_row_kernel_checks_its_arguments(change, message):
    args = dict(
        w=np.zeros((2, 4)),
        u=np.eye(2),
        scale=np.ones((1, 4), np.float32),
        zero_point=np.zeros((1, 4), np.int32),
        group=np.zeros(2, np.int32),
    )
    change(args)
    with pytest.raises(ValueError, match=message):
        K.compensate_rows(args["w"], args["u"], args["scale"], args["zero_point"], args["group"], 0, 15)


def test_the_factor_is_the_upper_cholesky_factor_of_the_damped_inverse_in_act_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 300)) * rng.uniform(0.1, 3.0, 300)  # fewer rows than features: singular
    h = x.T @ x / 40
    h[7, :] = h[:, 7] = 0.0  # an input never active
    f = gptq.factor(h, damp=0.1)
    assert np.all(np.diff(np.diag(h)[f.order][:-1]) <= 0) and f.order[-1] == 7  # most active first, dead last
    damped = h[np.ix_(f.order, f.order)].copy()
    damped[-1, -1] = 1.0
    damped += np.eye(300) * 0.1 * np.mean(np.diag(damped))
    assert np.allclose(np.tril(f.u, -1), 0) and (np.diag(f.u) > 0).all()
    np.testing.assert_allclose(f.u.T @ f.u, np.linalg.inv(damped), rtol=1e-8, atol=1e-10)
    assert gptq.factor(h, act_order=False).order.tolist() == list(range(300))


def layer(seed=0, k=256, n=192, m=2000):
    """Activations with correlated features and a few large ones (what transformers have), and a
    weight: X [m, k], W [k, n], and H = X^T X / m."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    x = (rng.standard_normal((m, k)) @ mix * (1 + 5 * (rng.random(k) < 0.03))).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    return x, w, x.T.astype(np.float64) @ x / m


def output_error(x, w, w_hat):
    return float(np.linalg.norm(x @ (w - w_hat)) / np.linalg.norm(x @ w))


@pytest.mark.parametrize(
    "bits, block_size, symmetric, per_tensor",
    [(4, 32, False, False), (4, 32, True, False), (4, None, False, False), (4, 128, True, False), (8, None, True, False),
     (8, 64, False, False), (8, None, False, True), (4, None, True, True)],
)  # fmt: skip
def test_compensated_codes_keep_the_scales_and_lower_the_output_error(bits, block_size, symmetric, per_tensor):
    x, w, h = layer()
    scheme = scheme_for(bits, symmetric=symmetric, native_int4=False)
    axis = None if per_tensor else (0 if block_size else 1)
    nearest = quantize_tensor(w, scheme, axis, block_size=block_size, range="refit" if block_size else "minmax")
    f = gptq.factor(h)
    comp = quantize_tensor(
        w,
        scheme,
        axis,
        block_size=block_size,
        range="refit" if block_size else "minmax",
        compensation=gptq.Compensation(f, False),
    )
    np.testing.assert_array_equal(comp.scale, nearest.scale)
    np.testing.assert_array_equal(comp.zero_point, nearest.zero_point)
    w_near, w_comp = dequantize(nearest, block_size), dequantize(comp, block_size)
    assert output_error(x, w, w_comp) < 0.7 * output_error(x, w, w_near)  # measured 0.58-0.61x
    assert comp.mse > nearest.mse  # the weight's own error is what it trades
    np.testing.assert_allclose(comp.mse, np.mean((w.astype(np.float64) - w_comp) ** 2), rtol=1e-6)
    assert comp.mse_minmax is None
    # A Gemm with transB=1 stores W^T: the same codes, transposed.
    transposed = quantize_tensor(
        np.ascontiguousarray(w.T), scheme, None if axis is None else 1 - axis, block_size=block_size,
        range="refit" if block_size else "minmax",
        compensation=gptq.Compensation(f, True),
    )  # fmt: skip
    np.testing.assert_array_equal(dequantize(transposed, block_size), w_comp.T)


def test_matmulnbits_layout_takes_the_same_compensated_codes():
    x, w, h = layer(k=200)  # 200 = 6 blocks of 32 and a short one
    f = gptq.Compensation(gptq.factor(h), False)
    scheme = scheme_for(4, symmetric=False, native_int4=True)
    qdq = quantize_tensor(w, scheme_for(4, symmetric=False, native_int4=False), 0, block_size=32, range="refit", compensation=f)
    nbits = quantize_matmulnbits(w, scheme, 32, range="refit", half_scale=False, compensation=f)
    codes = qdq.data.reshape(w.shape)  # [K, N], one code per byte
    padded = np.zeros((w.shape[1], 224), np.uint8)
    padded[:, :200] = codes.T
    np.testing.assert_array_equal(nbits.data, ((padded[:, 0::2] & 0x0F) | (padded[:, 1::2] << 4)).reshape(-1))
    assert nbits.mse == qdq.mse


def two_layer_model(path, seed=0, k=64, n=48):
    """x [B, k] -> MatMul(w1) -> Relu -> Gemm(w2, transB=1) -> y, both weights 2-D initializers;
    inputs with correlated features so that compensation has something to use."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    w2 = (rng.standard_normal((32, n)) / np.sqrt(n)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    mix = rng.standard_normal((k, k)) / np.sqrt(k)

    def inputs(count, seed_):
        r = np.random.default_rng(seed_)
        return (r.standard_normal((count, k)) @ mix * (1 + 4 * (np.arange(k) % 17 == 0))).astype(np.float32)

    return path, inputs


def run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(
    "options",
    [
        dict(bits=4, block_size=16),
        dict(bits=8, per_channel=True),
        dict(bits=8, per_channel=False),
        dict(bits=4, quant_format="matmulnbits", block_size=16),
    ],
)
def test_gptq_model_is_closer_to_float_on_held_out_inputs(tmp_path, options):
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    tuning, held_out = inputs(512, 1), inputs(256, 2)
    quantrs.quantize(src, tmp_path / "near.onnx", QuantizeConfig(**options))
    comp = quantrs.quantize(src, tmp_path / "gptq.onnx", QuantizeConfig(rounding="gptq", **options), data=[{"x": tuning}])
    ref = run(src, held_out)
    err_near = np.linalg.norm(run(tmp_path / "near.onnx", held_out) - ref) / np.linalg.norm(ref)
    err_comp = np.linalg.norm(run(tmp_path / "gptq.onnx", held_out) - ref) / np.linalg.norm(ref)
    assert err_comp < 0.8 * err_near, (err_comp, err_near)
    reasons = {t.name: t.reason for t in comp.tensors}
    assert all("codes by gptq" in reasons[n] for n in ("w1", "w2")), reasons
    assert layout(tmp_path / "gptq.onnx") == layout(tmp_path / "near.onnx")  # the codes change, nothing else
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "gptq.onnx")).metadata_props}
    assert meta["quantrs.rounding"] == "gptq (2 weights)"


def layout(path):
    """A model's nodes and stored tensors (names, types, shapes, scales' bytes), not its codes."""
    graph = onnx.load(str(path)).graph
    tensors = [
        (t.name, t.data_type, list(t.dims), t.raw_data if "scale" in t.name or "zero_point" in t.name else b"")
        for t in graph.initializer
    ]
    return [(n.op_type, list(n.input), list(n.output)) for n in graph.node], tensors


def test_hessians_in_groups_give_the_same_model(tmp_path, monkeypatch):
    """A Hessian budget holding one activation at a time runs the samples once per group; the
    codes are the same as with every Hessian at once."""
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    data = [{"x": inputs(100, 1)}, {"x": inputs(60, 3)}]
    config = QuantizeConfig(bits=4, block_size=16, rounding="gptq")
    quantrs.quantize(src, tmp_path / "one.onnx", config, data=data)
    groups = []
    real = gptq._hessians
    monkeypatch.setattr(
        gptq, "_hessians", lambda model, sources, *a: groups.append([n for n, _ in sources]) or real(model, sources, *a)
    )
    monkeypatch.setattr(gptq, "HESSIAN_BYTES", 8 * 64 * 64)
    quantrs.quantize(src, tmp_path / "many.onnx", config, data=data)
    assert groups == [["x"], ["r"]]
    assert (tmp_path / "one.onnx").read_bytes() == (tmp_path / "many.onnx").read_bytes()


def test_weights_gptq_cannot_reach_are_rounded_to_nearest_and_say_why(tmp_path):
    """A weight read by two MatMuls, one read in the main graph and in a body, one only inside
    an If body, one read through a Transpose: nearest, with the reason in the report; a plain
    MatMul weight beside them is compensated; the model still runs."""
    rng = np.random.default_rng(0)
    k = 32
    weight = lambda name: numpy_helper.from_array((rng.standard_normal((k, k)) / 6).astype(np.float32), name)  # noqa: E731
    shared, body_w, own, flipped, third = (weight(n) for n in ("shared", "body_w", "own", "flipped", "third"))
    branch = lambda name, w: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["c", w.name], [name])],
        name,
        [],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", k])],
        [w] if w is body_w else [],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "shared"], ["a"]),
        helper.make_node("MatMul", ["a", "shared"], ["b"]),
        helper.make_node("MatMul", ["b", "own"], ["c0"]),
        helper.make_node("Transpose", ["flipped"], ["flipped_t"], name="flip", perm=[1, 0]),
        helper.make_node("MatMul", ["c0", "flipped_t"], ["c1"]),
        helper.make_node("MatMul", ["c1", "third"], ["c"]),
        helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("t", body_w), else_branch=branch("e", own)),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", k])],
        [shared, own, flipped, third, numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = rng.standard_normal((64, k)).astype(np.float32)
    report = quantrs.quantize(
        tmp_path / "m.onnx", tmp_path / "q.onnx", QuantizeConfig(bits=8, min_elements=0, rounding="gptq"), data=[{"x": x}]
    )
    reasons = {t.name: t.reason for t in report.tensors}
    assert "rounded to nearest (gptq: read by 2 nodes)" in reasons["shared"]
    assert "rounded to nearest (gptq: inside a body)" in reasons["body_w"]
    assert "rounded to nearest (gptq: read by 2 nodes)" in reasons["own"]  # also read in a body
    assert "rounded to nearest (gptq: read by Transpose 'flip', not directly by a MatMul, Gemm or Conv)" in reasons["flipped"]
    assert "codes by gptq" in reasons["third"]
    ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"x": x})


def test_samples_without_rows_are_an_error_and_zero_inputs_leave_nearest_codes(tmp_path):
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match=r"m\.onnx: gptq: the samples give no rows of x"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(rounding="gptq"), data=[{"x": np.zeros((0, 64), np.float32)}])
    assert not (tmp_path / "q.onnx").exists()
    report = quantrs.quantize(
        src, tmp_path / "q.onnx", QuantizeConfig(rounding="gptq"), data=[{"x": np.zeros((8, 64), np.float32)}]
    )
    reasons = {t.name: t.reason for t in report.tensors}
    assert "rounded to nearest (gptq: x is zero on every sample)" in reasons["w1"]
    assert "rounded to nearest (gptq: r is zero on every sample)" in reasons["w2"]  # Relu of zeros


def test_non_finite_activations_are_a_one_line_error_naming_the_model(tmp_path):
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    x = inputs(8, 1)
    x[0, 0] = np.inf
    with pytest.raises(ConfigError, match=r"m\.onnx: gptq: x holds NaN or infinite"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(rounding="gptq"), data=[{"x": x}])
    assert not (tmp_path / "q.onnx").exists()


def test_gptq_needs_data_and_only_quantize_takes_it(tmp_path):
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    with pytest.raises(OptionError, match="needs calibration samples"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(rounding="gptq"))
    with pytest.raises(OptionError, match="read only by rounding gptq"):
        quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(), data=[{"x": inputs(4, 1)}])
    with pytest.raises(OptionError, match="rounding must be one of nearest, gptq"):
        QuantizeConfig(rounding="stochastic")
    np.save(tmp_path / "d.npy", inputs(16, 1))
    out = str(tmp_path / "q.onnx")
    for args, flag, code in [
        (["quantize", str(src), "-o", out, "--rounding", "gptq"], "--data", 2),
        (["quantize", str(src), "-o", out, "--data", str(tmp_path / "d.npy")], "--data", 2),
        (["quantize", str(src), "-o", out, "--rounding", "best"], "--rounding", 2),
        (["batch", str(src), "-o", str(tmp_path / "out"), "--rounding", "gptq"], "--rounding", 2),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == code and flag in result.output, (args, result.output)
    (tmp_path / "c.yaml").write_text(f"rounding: gptq\nmodels:\n  - input: {src}\n    output: {tmp_path / 'c.onnx'}\n")
    result = runner.invoke(app, ["config", str(tmp_path / "c.yaml")])
    assert result.exit_code == 1 and "rounding: gptq needs the model's samples" in result.output, result.output
    assert "Traceback" not in result.output
    assert runner.invoke(app, ["config", str(tmp_path / "c.yaml"), "--dry-run"]).exit_code == 1  # the same with --dry-run
    (tmp_path / "n.yaml").write_text(f"models:\n  - input: {src}\n    output: {tmp_path / 'c.onnx'}\n")
    result = runner.invoke(app, ["config", str(tmp_path / "n.yaml"), "--rounding", "gptq"])
    assert result.exit_code == 2 and "--rounding" in result.output, result.output
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "c.onnx").exists()


def test_cli_quantize_with_gptq(tmp_path):
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    np.save(tmp_path / "d.npy", inputs(64, 1))
    result = runner.invoke(
        app,
        [
            "quantize",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--bits",
            "4",
            "--block-size",
            "16",
            "--rounding",
            "gptq",
            "--data",
            str(tmp_path / "d.npy"),
            "--format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    tensors = {t["name"]: t for t in data["tensors"]}
    assert "codes by gptq" in tensors["w1"]["reason"] and (data["rounding"], data["samples"]) == ("gptq", 1)
    result = runner.invoke(
        app, ["quantize", str(src), "-o", str(tmp_path / "t.onnx"), "--rounding", "gptq", "--data", str(tmp_path / "d.npy")]
    )
    assert result.exit_code == 0 and "gptq: codes of 2 weight(s) compensated on 1 sample(s)" in " ".join(result.output.split()), (
        result.output
    )
    run(tmp_path / "q.onnx", inputs(4, 2))
    # A sample file the model cannot take: one line naming it, exit 1, nothing written.
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), np.float32))
    result = runner.invoke(
        app, ["quantize", str(src), "-o", str(tmp_path / "r.onnx"), "--rounding", "gptq", "--data", str(tmp_path / "bad.npy")]
    )
    assert result.exit_code == 1 and "bad.npy" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r.onnx").exists()


def test_a_factor_cache_skips_the_float_runs_and_gives_the_same_model(tmp_path, monkeypatch):
    """auto builds several candidates from the same samples: with a `factors` dict the second
    build takes the factors the first computed (no float run) and writes the same codes."""
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    data = [{"x": inputs(100, 1)}]
    runs = []
    real = gptq._hessians
    monkeypatch.setattr(
        gptq, "_hessians", lambda model, sources, *a: runs.append([n for n, _ in sources]) or real(model, sources, *a)
    )
    cache: dict = {}
    config = QuantizeConfig(bits=4, block_size=16, rounding="gptq")
    quantrs.quantize(src, tmp_path / "a.onnx", config, data=data, factors=cache)
    assert runs == [["x", "r"]] and set(cache) == {("x", None), ("r", None)}
    quantrs.quantize(src, tmp_path / "b.onnx", config, data=data, factors=cache)
    assert runs == [["x", "r"]]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # A factor of another shape (another model's) is not taken: recomputed, the same codes.
    cache[("x", None)] = gptq.factor(np.eye(8))
    quantrs.quantize(src, tmp_path / "c.onnx", config, data=data, factors=cache)
    assert runs[-1] == ["x"] and (tmp_path / "c.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
    # The cache holds no more factors than the Hessians' budget.
    monkeypatch.setattr(gptq, "HESSIAN_BYTES", 8 * 64 * 64)
    small: dict = {}
    quantrs.quantize(src, tmp_path / "d.onnx", config, data=data, factors=small)
    assert sum(f.u.nbytes for f in small.values()) <= 8 * 64 * 64 and len(small) == 1


def test_overflowing_activations_are_one_line_errors_in_quantize_and_auto(tmp_path):
    """Finite samples whose products overflow float32: one line naming the model, exit 1, in
    quantize and in auto's sensitivity pass alike (which builds its own Hessians)."""
    src, _ = two_layer_model(tmp_path / "m.onnx")
    np.save(tmp_path / "big.npy", np.full((8, 16, 64), 1e25, np.float32))
    for args in (
        ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--rounding", "gptq", "--data", str(tmp_path / "big.npy")],
        [
            "auto",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--min-cosine",
            "0.99",
            "--data",
            str(tmp_path / "big.npy"),
            "--rounding",
            "gptq",
            "--choices",
            "4,8",
        ],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "m.onnx: gptq: the products of x overflow float32" in " ".join(result.output.split()), (
            result.output
        )
        assert "Traceback" not in result.output and "RuntimeWarning" not in result.output
        assert not (tmp_path / "q.onnx").exists()


def test_the_report_says_when_gptq_reaches_no_weight(tmp_path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((48, 64)) / 8).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 48])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.save(tmp_path / "d.npy", rng.standard_normal((4, 8, 64)).astype(np.float32))
    result = runner.invoke(
        app,
        [
            "quantize",
            str(tmp_path / "m.onnx"),
            "-o",
            str(tmp_path / "q.onnx"),
            "--rounding",
            "gptq",
            "--data",
            str(tmp_path / "d.npy"),
        ],
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "gptq reached no weight: all 1 rounded to nearest" in text and "read by Transpose" in text, (
        text
    )


@pytest.mark.parametrize(
    "attrs",
    [
        dict(),
        dict(strides=[2, 2], pads=[1, 1, 1, 1]),
        dict(dilations=[2, 1], pads=[2, 0, 1, 1]),
        dict(auto_pad="SAME_UPPER", strides=[2, 2]),
        dict(auto_pad="SAME_LOWER", strides=[2, 1]),
        dict(auto_pad="VALID", strides=[1, 2], dilations=[1, 2]),
    ],
)
def test_conv_patches_are_the_rows_the_conv_multiplies(attrs):
    """Conv(x, W) = patches(x) @ W.reshape(O, -1).T, checked against onnxruntime for strides,
    pads, dilations and auto_pad: the Hessian of a Conv weight is that of these rows."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 2], **attrs)
    graph = helper.make_graph(
        [node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    targets, _ = gptq.find_targets(graph, ["w"], {"w": list(w.shape)})
    patches = targets["w"].conv.patches(x)
    assert targets["w"].rows == 3 * 3 * 2 and targets["w"].transposed
    np.testing.assert_allclose(patches @ w.reshape(5, -1).T, y.transpose(0, 2, 3, 1).reshape(-1, 5), rtol=1e-5, atol=1e-5)


def test_conv_weights_get_compensated_codes(tmp_path, capsys):
    """A small CNN (2-D Convs, one grouped) at 4 bits per channel: the Conv weights' codes are
    compensated on their input patches and the model is closer to float on held-out images
    (relative error measured 0.129 against 0.168); a grouped Conv's weight is rounded to
    nearest, with the reason."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((3, 3)).astype(np.float32)

    def images(n, seed):
        r = np.random.default_rng(seed)
        smooth = r.standard_normal((n, 3, 18, 18)).astype(np.float32)
        smooth = (smooth[:, :, :-2, :-2] + smooth[:, :, 1:-1, 1:-1] + smooth[:, :, 2:, 2:]) / 3  # correlated pixels
        return np.einsum("dc,nchw->ndhw", mix, smooth).astype(np.float32)

    weights = {
        "c1": (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32),
        "c2": (rng.standard_normal((16, 16, 3, 3)) / 12).astype(np.float32),
        "dw": (rng.standard_normal((16, 1, 3, 3)) / 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2"], ["h2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "dw"], ["y"], group=16, pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "m.onnx"))
    config = QuantizeConfig(bits=4, per_channel=True, min_elements=0)
    quantrs.quantize(tmp_path / "m.onnx", tmp_path / "near.onnx", config)
    report = quantrs.quantize(
        tmp_path / "m.onnx", tmp_path / "gptq.onnx", dataclasses.replace(config, rounding="gptq"), data=[{"x": images(64, 1)}]
    )
    reasons = {t.name: t.reason for t in report.tensors}
    assert "codes by gptq" in reasons["c1"] and "codes by gptq" in reasons["c2"], reasons
    assert "rounded to nearest (gptq: a grouped Conv's weight (group 16))" in reasons["dw"]
    from quantrs.render import render_quantize

    render_quantize(report)  # the reason as given, its own parenthesis kept
    assert "dw: a grouped Conv's weight (group 16)" in " ".join(capsys.readouterr().out.split())
    held_out = images(32, 2)

    def error(path):
        got = ort.InferenceSession(str(path)).run(None, {"x": held_out})[0]
        ref = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": held_out})[0]
        return np.linalg.norm(got - ref) / np.linalg.norm(ref)

    assert error(tmp_path / "gptq.onnx") < 0.8 * error(tmp_path / "near.onnx"), (
        error(tmp_path / "gptq.onnx"),
        error(tmp_path / "near.onnx"),
    )


def test_calibrate_compensates_the_weights_of_a_static_model(tmp_path):
    """Static quantization with --rounding gptq: the weights' codes are compensated on the
    calibration samples' float activations (the activations' ranges as without it); with
    4-bit blocked weights the static model is closer to float on held-out inputs (relative
    error measured 0.079 against 0.119; with INT8 weights 0.031 against 0.032: there the
    activations' error dominates)."""
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    samples = [{"x": inputs(64, seed)} for seed in range(1, 9)]
    weights = QuantizeConfig(bits=4, block_size=16)
    quantrs.calibrate(src, tmp_path / "near.onnx", samples, CalibrationConfig(weights=weights))
    report = quantrs.calibrate(
        src, tmp_path / "gptq.onnx", samples, CalibrationConfig(weights=dataclasses.replace(weights, rounding="gptq"))
    )
    assert report.rounding == "gptq" and report.compensated == ["w1", "w2"]
    model = onnx.load(str(tmp_path / "gptq.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # activations quantized too
    assert {p.key: p.value for p in model.metadata_props}["quantrs.rounding"] == "gptq (2 weights)"
    held_out = inputs(256, 20)
    ref = run(src, held_out)
    err_near = np.linalg.norm(run(tmp_path / "near.onnx", held_out) - ref) / np.linalg.norm(ref)
    err_gptq = np.linalg.norm(run(tmp_path / "gptq.onnx", held_out) - ref) / np.linalg.norm(ref)
    assert err_gptq < 0.8 * err_near, (err_gptq, err_near)
    np.save(tmp_path / "d.npy", np.stack([s["x"] for s in samples]))
    result = runner.invoke(
        app, ["calibrate", str(src), "--data", str(tmp_path / "d.npy"), "-o", str(tmp_path / "c.onnx"), "--rounding", "gptq"]
    )
    assert result.exit_code == 0 and "gptq: codes of 2 weight(s) compensated on the samples" in " ".join(result.output.split()), (
        result.output
    )


def test_the_stages_before_the_writing_are_reported(tmp_path, monkeypatch):
    """gptq's Hessians and codes come before the writing and take most of its time: `stage`
    hears of every sample run and every weight, all before the first tensor is written (a bar
    at "0 tensors, 0/0 MB" through them looked hung)."""
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    data = [{"x": inputs(16, seed)} for seed in range(3)]
    config = QuantizeConfig(bits=4, block_size=16, rounding="gptq")
    events: list[tuple] = []

    def quantize(name):
        events.clear()
        quantrs.quantize(
            src,
            tmp_path / name,
            config,
            data=data,
            stage=lambda *a: events.append(("stage", *a)),
            progress=lambda *a: events.append(("write", *a)),
        )
        first_write = next(i for i, e in enumerate(events) if e[0] == "write")
        assert all(e[0] == "stage" for e in events[:first_write]) and all(e[0] == "write" for e in events[first_write:])
        return events[:first_write]

    stages = quantize("one.onnx")
    assert stages[0] == ("stage", "loading samples", "", 0, 0)
    assert [e[2:] for e in stages if e[1] == "collecting Hessians"] == [("samples", n, 3) for n in range(4)]
    assert stages[-1] == ("stage", "compensating codes", "weights", 2, 2)
    monkeypatch.setattr(gptq, "HESSIAN_BYTES", 8 * 64 * 64)  # one activation at a time: a run of the samples each
    stages = quantize("two.onnx")
    assert [e[2:] for e in stages if e[1] == "collecting Hessians"] == [("sample runs", n, 6) for n in range(7)]
    assert [e[1:] for e in stages if e[1] != "collecting Hessians"] == [
        ("loading samples", "", 0, 0),
        ("factoring Hessians", "activations", 0, 2),
        ("compensating codes", "weights", 0, 2),
        ("compensating codes", "weights", 1, 2),
        ("factoring Hessians", "activations", 1, 2),
        ("compensating codes", "weights", 1, 2),
        ("compensating codes", "weights", 2, 2),
    ]


def test_the_cli_bar_shows_the_stage(tmp_path, monkeypatch):
    """quantize --rounding gptq hands the bar the stages; the bar names the stage and counts it."""
    import contextlib
    import io

    from rich.console import Console
    from rich.progress import Progress

    from quantrs import _console

    shown: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def recording_bar(what, *, disabled):
        progress = Progress(console=Console(file=io.StringIO()))
        bar = _console.Bar(progress, what)
        real_stage = bar.stage

        def stage(*args):
            real_stage(*args)
            shown.append((progress.tasks[0].description, progress.tasks[0].fields["detail"]))

        bar.stage = stage  # type: ignore[method-assign]
        yield bar
        shown.append((progress.tasks[0].description, progress.tasks[0].fields["detail"]))  # after the writing

    monkeypatch.setattr(_console, "progress_bar", recording_bar)
    src, inputs = two_layer_model(tmp_path / "m.onnx")
    np.save(tmp_path / "d.npy", inputs(64, 1))
    result = runner.invoke(
        app, ["quantize", str(src), "-o", str(tmp_path / "q.onnx"), "--rounding", "gptq", "--data", str(tmp_path / "d.npy")]
    )
    assert result.exit_code == 0, result.output
    assert ("collecting Hessians", "1/1 samples") in shown and ("compensating codes", "2/2 weights") in shown, shown
    assert shown[-1][0] == "quantizing" and shown[-1][1].startswith("2/2 tensors, "), shown
