"""What 4-bit blocks of 32 keep of all-MiniLM-L6-v2 (tests/minilm.py), and what moves it: the
range of each block (the kernel's minmax / refit / search, and a one-pass least-squares refit
prototyped here in numpy), and gptq's calibration samples (stacked, one per sentence, more
sentences). Cosine of the 32 test sentences' embeddings to the float model's, MatMulNBits form
(6.17x smaller), one line of JSON per setting.

    python bench/minilm_b32.py

The numpy prototype ("fixed-codes least squares") came first: each block's codes are those of
its min/max range shrunk by alpha, its scale and zero point the least-squares fit for those
codes (zero point: the best of the fitted one, its neighbours and the range's own). The kernel's
refit and search now work this way (bench/RESULTS.md, "Refit and search chosen on sums"), with
plain min/max always a candidate; the prototype's alpha 0.97 alone shows a single clipped grid
point without that candidate.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import minilm  # noqa: E402

import quantrs  # noqa: E402
from quantrs import QuantizeConfig  # noqa: E402

INPUTS = ("input_ids", "attention_mask")
CONFIG = QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits")


def embed(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sentence_embedding"], {k: feeds[k] for k in INPUTS})[0]


def report(setting: str, path: Path, ref: np.ndarray, feeds: dict[str, np.ndarray]) -> None:
    got = embed(path, feeds)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    overall = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    print(json.dumps(dict(setting=setting, worst_cosine=round(float(cos.min()), 4), cosine=round(overall, 4))), flush=True)


def samples(sentences: list[str], *, stacked: bool) -> list[dict[str, np.ndarray]]:
    """One sample of all sentences padded to the longest, or one unpadded sample per sentence."""
    groups = [sentences] if stacked else [[s] for s in sentences]
    return [{k: v for k, v in minilm.tokenize(g, minilm.weights_dir()).items() if k in INPUTS} for g in groups]


def fixed_codes_fit(x: np.ndarray, alpha: float, qmax: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UINT4 codes of each row of x (a block) for its min/max range shrunk by alpha, then the
    scale and integer zero point of least squared error for those codes: (codes, scale, zero)."""
    lo, hi = np.minimum(alpha * x.min(1, keepdims=True), 0), np.maximum(alpha * x.max(1, keepdims=True), 0)
    scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    zero = np.clip(np.rint(-lo / scale), 0, qmax)
    codes = np.clip(np.rint(x / scale) + zero, 0, qmax)
    n = x.shape[1]
    sq, sqq, sxq, sx = (
        codes.sum(1, keepdims=True),
        (codes**2).sum(1, keepdims=True),
        (x * codes).sum(1, keepdims=True),
        x.sum(1, keepdims=True),
    )
    den = n * sqq - sq * sq
    slope = np.where(den > 0, (n * sxq - sq * sx) / np.where(den > 0, den, 1), scale)
    fitted = np.clip(np.rint(-(sx - slope * sq) / n / slope), 0, qmax)
    best_s, best_z = scale, zero
    best_e = ((x - scale * (codes - zero)) ** 2).sum(1, keepdims=True)
    for z in (fitted, np.clip(fitted - 1, 0, qmax), np.clip(fitted + 1, 0, qmax), zero):
        q = codes - z
        qq = (q * q).sum(1, keepdims=True)
        s = (x * q).sum(1, keepdims=True) / np.where(qq > 0, qq, 1)
        s = np.where((qq > 0) & (s > 0), s, scale)
        e = ((x - s * q) ** 2).sum(1, keepdims=True)
        better = e < best_e
        best_s, best_z, best_e = np.where(better, s, best_s), np.where(better, z, best_z), np.minimum(e, best_e)
    return codes, best_s, best_z


def refit_matmulnbits(quantized: Path, src: Path, out: Path, alpha: float) -> None:
    """`quantized` (a MatMulNBits model of `src`) with every MatMulNBits weight re-coded by
    fixed_codes_fit: B [N, blocks, 16] low nibble first, zero points packed per row."""
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    model = onnx.load(str(quantized))
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
        blocks = -(-k // block)
        assert k % block == 0 and blocks % 2 == 0, "the prototype takes whole blocks, an even number per row"
        w = weights[node.input[1].removesuffix("_quantized")].astype(np.float64)  # [K, N]
        codes, scale, zero = fixed_codes_fit(w.T.reshape(n * blocks, block), alpha)
        c = codes.reshape(n, blocks, block).astype(np.uint8)
        z = zero.reshape(n, blocks).astype(np.uint8)
        for name, value in zip(
            node.input[1:4],
            (
                c[..., 0::2] | (c[..., 1::2] << 4),
                scale.astype(np.float32).reshape(-1),
                (z[:, 0::2] | (z[:, 1::2] << 4)).reshape(-1),
            ),
        ):
            inits[name].CopyFrom(numpy_helper.from_array(value, name))
    onnx.save(model, str(out))


def weight_errors() -> None:
    """Squared error of a standard normal [1024, 1024] weight in blocks of 32 along axis 0, as a
    ratio to min/max's: the kernel's refit and search against the prototype."""
    from quantrs import kernels

    w = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    plain = kernels.quantize_blocks(w, 0, 32, 0, 15, symmetric=False).sse
    rows = w.T.reshape(-1, 32).astype(np.float64)  # each row one block (a column's 32 values)
    for label, alphas in (("refit", (1.0,)), ("search", None)):
        got = kernels.quantize_blocks(w, 0, 32, 0, 15, symmetric=False, search=True, alphas=alphas).sse
        print(json.dumps(dict(setting=f"weight sse / min/max's, kernel {label}", ratio=round(got / plain, 4))))
    for alpha in (1.0, 0.97):
        codes, scale, zero = fixed_codes_fit(rows, alpha)
        got = float(np.sum((rows - scale * (codes - zero)) ** 2))
        print(
            json.dumps(
                dict(setting=f"weight sse / min/max's, fixed-codes least squares at alpha {alpha}", ratio=round(got / plain, 4))
            )
        )


def main() -> None:
    weight_errors()
    work = Path(tempfile.mkdtemp(prefix="minilm_b32."))
    src = work / "minilm.onnx"
    onnx.save(minilm.build_encoder(minilm.weights_dir()), str(src))
    feeds = minilm.tokenize(minilm.SENTENCES, minilm.weights_dir())
    ref = embed(src, feeds)
    for range_ in ("minmax", "refit", "search"):
        out = work / f"{range_}.onnx"
        quantrs.quantize(src, out, dataclasses.replace(CONFIG, range=range_))
        report(f"nearest, --range {range_}", out, ref, feeds)
    for alpha in (1.0, 0.97):
        out = work / f"fit{alpha}.onnx"
        refit_matmulnbits(work / "minmax.onnx", src, out, alpha)
        report(f"nearest, fixed-codes least squares at alpha {alpha} (MatMul weights)", out, ref, feeds)
    gptq = dataclasses.replace(CONFIG, rounding="gptq")
    both = minilm.TUNING_SENTENCES + minilm.HELD_OUT_SENTENCES
    for label, data in (
        ("32 sentences stacked (padded)", samples(minilm.TUNING_SENTENCES, stacked=True)),
        ("32 sentences, one sample each", samples(minilm.TUNING_SENTENCES, stacked=False)),
        ("48 sentences, one sample each", samples(both, stacked=False)),
    ):
        out = work / "gptq.onnx"
        quantrs.quantize(src, out, gptq, data=data)
        report(f"gptq, {label}", out, ref, feeds)


if __name__ == "__main__":
    main()
