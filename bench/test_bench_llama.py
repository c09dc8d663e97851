"""The Llama-shaped decoder of bench/llama.py, at toy widths: it must stay a model onnxruntime
runs (float32 and float16, external data), and one quantrs quantizes to MatMulNBits with logits
close to float's. bench/llm_scale.py builds the same graph at TinyLlama and Llama-7B widths."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama import Widths, build_decoder  # noqa: E402

import quantrs  # noqa: E402

TOY = Widths(hidden=128, intermediate=352, layers=2, heads=4, kv_heads=2, vocab=512)


def _logits(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids})[0].astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_toy_decoder_runs_and_quantizes(tmp_path, dtype):
    src = build_decoder(tmp_path / "toy.onnx", TOY, dtype)
    assert (tmp_path / "toy.onnx.data").exists()
    assert TOY.params == sum(
        int(np.prod(t.dims))
        for t in __import__("onnx").load(str(src), load_external_data=False).graph.initializer
        if "weight" in t.name
    )
    ids = np.random.default_rng(0).integers(0, TOY.vocab, (2, 16))
    ref = _logits(src, ids)
    assert ref.shape == (2, 16, TOY.vocab) and np.isfinite(ref).all()
    four = quantrs.quantize(src, tmp_path / "q4.onnx", quantrs.QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits"))
    assert (
        sum(t.storage == "UINT4 (MatMulNBits)" for t in four.tensors if t.quantized) == 7 * TOY.layers + 1
    )  # q k v o gate up down, head
    assert np.isfinite(_logits(tmp_path / "q4.onnx", ids)).all()
    quantrs.quantize(src, tmp_path / "q8.onnx")  # INT8 per channel: close to float even with the x20 rows
    got = _logits(tmp_path / "q8.onnx", ids)
    cosine = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosine > 0.98, cosine


def test_smoothing_helps_the_toy_decoder_with_outlier_norm_gains(tmp_path):
    """RMSNorm gains of 20 on a few channels (--norm-outliers): plain dynamic INT8 loses the
    other channels to the outliers' range; --smooth auto migrates it into the weights."""
    src = build_decoder(tmp_path / "toy.onnx", TOY, "float32", norm_outliers=20.0)
    rng = np.random.default_rng(1)
    samples = [{"input_ids": rng.integers(0, TOY.vocab, (1, 16))} for _ in range(8)]
    ids = np.random.default_rng(0).integers(0, TOY.vocab, (4, 16))
    ref = _logits(src, ids)
    quantrs.quantize(src, tmp_path / "plain.onnx", quantrs.QuantizeConfig(dynamic=True, min_elements=0))
    report = quantrs.quantize(
        src, tmp_path / "smooth.onnx", quantrs.QuantizeConfig(dynamic=True, min_elements=0, smooth="auto"), data=samples
    )
    # per layer: Q/K/V and gate/up folded into their norms, o_proj and down_proj by a Mul; the head into the final norm
    assert f"{2 * TOY.layers + 1} folded into norms" in report.notes[-1], report.notes
    cosines = {}
    for name in ("plain", "smooth"):
        got = _logits(tmp_path / f"{name}.onnx", ids)
        cosines[name] = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cosines["plain"] < 0.9 and cosines["smooth"] > 0.97, cosines  # measured: 0.811 and 0.982
