"""A real pretrained model shipped inside a PyPI package: Google's Magika file-type classifier
(Conv + MatMul layers, LayerNorm, opset 15, exported by tf2onnx). Its input is the raw bytes of
files, so real files from the installed packages make a realistic test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_packages import magika_model

import quantrs
from quantrs import QuantizeConfig

MODEL = magika_model()  # skips the module when magika is not installed (tests/requirements-models.txt)


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    """The first 2048 bytes of 96 real files (padding token 256), as Magika's model expects."""
    roots = [Path(np.__file__).parent, Path(onnx.__file__).parent]
    files = sorted(f for root in roots for f in root.rglob("*") if f.is_file() and f.stat().st_size > 64)
    picked = files[:: max(1, len(files) // 96)][:96]
    x = np.full((len(picked), 2048), 256, dtype=np.int32)
    for i, f in enumerate(picked):
        head = np.frombuffer(f.read_bytes()[:2048], dtype=np.uint8)
        x[i, : head.size] = head
    return x


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"bytes": x})[0]


# (bits, per_channel, symmetric) -> (min top-1 agreement, max mean total-variation distance
# between the float and quantized class distributions). Measured on this sample: INT8 agrees
# on 99-100% with mean TV 0.001-0.002; INT4 on 95-98% with mean TV 0.02-0.05.
CASES = {
    (8, True, False): (0.97, 0.01),
    (8, False, False): (0.95, 0.015),
    (8, True, True): (0.97, 0.01),
    (4, True, True): (0.88, 0.08),
    (4, False, False): (0.88, 0.09),
}


@pytest.mark.parametrize("bits, per_channel, symmetric", list(CASES), ids=str)
def test_magika_quantized_agrees_with_float(bits, per_channel, symmetric, samples, tmp_path):
    before = MODEL.read_bytes()
    dst = tmp_path / "magika_q.onnx"
    report = quantrs.quantize(MODEL, dst, QuantizeConfig(bits=bits, per_channel=per_channel, symmetric=symmetric))
    assert MODEL.read_bytes() == before
    assert report.quantized_count == 3  # the Conv and both dense layers
    assert report.compression > (3.5 if bits == 8 else 6.5)
    if bits == 4:
        assert report.opset_before == 15 and report.opset_after == 21 and report.opset_converted
    onnx.checker.check_model(str(dst), full_check=True)

    ref, got = predict(MODEL, samples), predict(dst, samples)
    min_agreement, max_tv = CASES[bits, per_channel, symmetric]
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    assert agreement >= min_agreement, agreement
    total_variation = 0.5 * np.abs(ref - got).sum(axis=1)
    assert float(total_variation.mean()) <= max_tv
