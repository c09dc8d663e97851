"""quantrs' QDQ output in a second runtime: OpenVINO's CPU plugin (issue 23.6).

Each test model is quantized the ways users quantize (4-bit blocks of 32: asymmetric, symmetric,
codes stored as INT8; per-channel INT8 and INT4; static INT8 and static with 4-bit blocks), then
run in onnxruntime and in OpenVINO, and each runtime's output is compared with the float model's
(relative L2 error). The bar: OpenVINO's error is at most 1.5x onnxruntime's plus 0.005. (The
two runtimes round differently: each may quantize the activations of weight-compressed MatMuls
to 8 bits on its own. Measured over these cases: OpenVINO's error 0.79-1.17x onnxruntime's, at
most 0.0023 above it; a model OpenVINO miscomputes is off by 100%.) And all-MiniLM-L6-v2's
sentence embeddings, by cosine (test_minilm_runs_in_openvino).

The models hold what OpenVINO 2026.4 refused before quantrs padded its blocks: weights whose
reduction axis is not a multiple of 32 (200: MatMul, Gemm, a table read through a Transpose), and
embedding tables looked up by Gather (their rows dequantized after the lookup, so the codes'
shape is known only at run time).

openvino is an optional test dependency (`pip install '.[openvino]'`); without it these tests
skip, and under CI (the CI environment variable set) its absence is an error.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

try:
    import openvino
except ImportError:
    if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install
        raise RuntimeError("CI: openvino is not installed (pip install '.[openvino]')") from None
    pytest.skip(
        "openvino is not installed: pip install '.[openvino]' to run quantrs' output in OpenVINO", allow_module_level=True
    )

import builders
import quantrs
from quantrs import QuantizeConfig
from quantrs.calibration import CalibrationConfig
from test_blocks import outlier_mlp
from test_gather_block import table_model

RATIO, SLACK = 1.5, 0.005  # OpenVINO's error to float <= RATIO * onnxruntime's + SLACK

CORE = openvino.Core()


def run_openvino(path, feeds) -> list[np.ndarray]:
    compiled = CORE.compile_model(str(path), "CPU")
    results = compiled(feeds)
    return [np.asarray(results[output]) for output in compiled.outputs]


def run_onnxruntime(path, feeds) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def rel_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def assert_as_close_as_onnxruntime(src, dst, feeds) -> list[tuple[float, float]]:
    """Both runtimes run `dst`; OpenVINO's error to the float model (`src` in onnxruntime) is
    within the bar of onnxruntime's, output by output. Returns (onnxruntime, OpenVINO) errors."""
    want = run_onnxruntime(src, feeds)
    errors = [(rel_l2(a, w), rel_l2(b, w)) for a, b, w in zip(run_onnxruntime(dst, feeds), run_openvino(dst, feeds), want)]
    assert all(theirs <= RATIO * ours + SLACK for ours, theirs in errors), errors
    return errors


def _shared_weight():
    # "tied" (a Gemm's B with transB=1 and a MatMul's B: quantized per tensor) is left float:
    # OpenVINO 2026.4 miscomputes a dequantized weight read both transposed and not (see
    # test_openvino_reads_a_weight_gemm_transposes_and_matmul_does_not); "w" (read by two
    # MatMuls) is what this model is here for.
    model, feeds = builders.shared_weight()
    return model, feeds, ("tied",)


MODELS = {
    **{name: (lambda build=build: (*build(), ())) for name, build in builders.BUILDERS.items() if name != "shared_weight"},
    "shared_weight": _shared_weight,
    "mlp, K = 200": lambda: (*outlier_mlp(k=200), ()),  # MatMul weights [200, 512]: 6 blocks of 32 and 8 values
    "table, tied by Gemm": lambda: (*table_model("gemm"), ()),  # rows of 200, looked up and read by Gemm(transB=1)
    "table, tied by Transpose": lambda: (*table_model("transpose"), ()),  # ... and through Transpose -> MatMul
}
CONFIGS = {
    "4-bit blocks": dict(bits=4, block_size=32),
    "4-bit blocks, symmetric": dict(bits=4, block_size=32, symmetric=True),
    "4-bit blocks as INT8": dict(bits=4, block_size=32, native_int4=False),
    "INT8 per channel": dict(bits=8),
    "INT4 per channel": dict(bits=4),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", list(MODELS))
def test_weight_only_outputs_run_in_openvino(save, tmp_path, name, config):
    model, feeds, exclude = MODELS[name]()
    src = save(model)
    quantrs.quantize(src, tmp_path / "q.onnx", QuantizeConfig(min_elements=0, exclude=exclude, **CONFIGS[config]))
    onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)
    assert_as_close_as_onnxruntime(src, tmp_path / "q.onnx", feeds)


def _samples(feeds: dict[str, np.ndarray], count: int = 8) -> list[dict[str, np.ndarray]]:
    """Calibration samples shaped like `feeds`: standard normal values, or ids within them."""
    rng = np.random.default_rng(5)
    high = {k: int(v.max()) + 1 for k, v in feeds.items() if v.dtype.kind == "i"}
    return [
        {
            k: (rng.integers(0, high[k], v.shape) if k in high else rng.standard_normal(v.shape)).astype(v.dtype)
            for k, v in feeds.items()
        }
        for _ in range(count)
    ]


STATIC_MODELS = [
    "conv_net",
    "mlp",
    "gemm_transB0",
    "gemm_transB1",
    "embedding",
    "shared_weight",
    "mlp, K = 200",
    "table, tied by Gemm",
]


@pytest.mark.parametrize("weights", ["INT8 per channel", "4-bit blocks"])
@pytest.mark.parametrize("name", STATIC_MODELS)
def test_static_outputs_run_in_openvino(save, tmp_path, name, weights):
    model, feeds, exclude = MODELS[name]()
    src = save(model)
    options = QuantizeConfig(min_elements=0, exclude=exclude, **{"4-bit blocks": dict(bits=4, block_size=32)}.get(weights, {}))
    quantrs.calibrate(src, tmp_path / "q.onnx", _samples(feeds), CalibrationConfig(weights=options))
    onnx.checker.check_model(str(tmp_path / "q.onnx"), full_check=True)
    assert_as_close_as_onnxruntime(src, tmp_path / "q.onnx", feeds)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """all-MiniLM-L6-v2 (tests/minilm.py), its 32 test sentences and their float embeddings."""
    import minilm

    weights = minilm.require()  # skips this test without the checkpoint (an error under CI)
    path = tmp_path_factory.mktemp("minilm") / "minilm.onnx"
    onnx.save(minilm.build_encoder(weights), str(path))
    feeds = {k: v for k, v in minilm.tokenize(minilm.SENTENCES, weights).items() if k in ("input_ids", "attention_mask")}
    calibration = [
        {k: v for k, v in minilm.tokenize(minilm.SENTENCES[i : i + 4], weights).items() if k in feeds} for i in range(0, 16, 4)
    ]
    return path, feeds, calibration, run_onnxruntime(path, feeds)[0]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("kind", ["4-bit blocks", "INT8 per channel", "static INT8"])
def test_minilm_runs_in_openvino(encoder, tmp_path, kind):
    """The sentence embeddings of the quantized encoder (its word-embedding table looked up and
    dequantized per block with 4-bit blocks) in OpenVINO: the worst sentence's cosine to the
    float embedding at most 0.005 below onnxruntime's. Measured: 4-bit blocks 0.9619 (onnxruntime
    0.9604), INT8 per channel 0.9996 (0.9993), static INT8 0.9932 (0.9921)."""
    src, feeds, calibration, want = encoder
    dst = tmp_path / "q.onnx"
    if kind == "static INT8":
        quantrs.calibrate(src, dst, calibration, CalibrationConfig())
    else:
        quantrs.quantize(src, dst, QuantizeConfig(**CONFIGS[kind]))
    ours = _cosines(run_onnxruntime(dst, feeds)[0], want).min()
    theirs = _cosines(run_openvino(dst, feeds)[0], want).min()
    assert theirs >= ours - 0.005, (ours, theirs)


def test_the_models_hold_what_openvino_refused(save, tmp_path):
    """The cases above include blocks padded to whole ones and a lookup dequantized per block
    (OpenVINO 2026.4 refused the short block, "dimension of X at axis 0 (200) cannot be divided
    by block_size (32)", and the blocked DequantizeLinear of gathered rows, "DequantizeLinear
    cannot operate with dynamic shapes of input X")."""
    model, _, _ = MODELS["table, tied by Gemm"]()
    quantrs.quantize(save(model), tmp_path / "q.onnx", QuantizeConfig(bits=4, block_size=32))
    out = onnx.load(str(tmp_path / "q.onnx"))
    inits = {t.name: list(t.dims) for t in out.graph.initializer}
    assert inits["emb_quantized"] == [500, 224] and inits["w_quantized"] == [224, 64]  # rows of 200 padded
    writers = {n.output[0]: n for n in out.graph.node}
    # the table (100,000 values) is read padded by the Gemm, its input padded; w (12,800) sliced back
    assert writers["logits"].op_type == "Gemm" and writers[writers["logits"].input[0]].op_type == "Pad"
    assert writers["y"].input[1] == "w" and writers["w"].op_type == "Slice"
    lookup = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits)
    assert [a.name for a in lookup.attribute] == ["axis"]  # per axis: one scale per block of the gathered rows


def test_openvino_reads_a_weight_gemm_transposes_and_matmul_does_not(tmp_path):
    """Why shared_weight's "tied" is left float above: OpenVINO 2026.4 miscomputes one
    DequantizeLinear output read by Gemm(transB=1) and by MatMul (relative error ~1.2; the float
    model, and each use alone, run right; two DequantizeLinear nodes of the same codes too).
    Not quantrs' to fix: this test xfails while it lasts and passes once OpenVINO fixes it."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(0, 256, (64, 64)).astype(np.uint8), "q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["w"]),
        helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "tied.onnx"))
    feeds = {"x": rng.standard_normal((8, 64)).astype(np.float32)}
    error = rel_l2(run_openvino(tmp_path / "tied.onnx", feeds)[0], run_onnxruntime(tmp_path / "tied.onnx", feeds)[0])
    if error > 0.01:  # (a pass means a fixed OpenVINO: the exclusion in _shared_weight can go)
        pytest.xfail(f"OpenVINO {openvino.__version__} is off by {error:.2f} (relative L2)")
