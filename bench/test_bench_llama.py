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
