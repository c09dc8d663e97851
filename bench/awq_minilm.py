"""A prototype measured for issue 11, not a quantrs feature: activation-aware per-input-channel
scales (AWQ, Lin et al. 2023) on all-MiniLM-L6-v2, then quantrs' 4-bit blocks of 32 in
MatMulNBits form. Cosine of the 32 test sentences' embeddings to the float model's.

    python bench/awq_minilm.py

For every activation that MatMul weights read (a group: Q/K/V share one), with m_j the mean
|x_j| over the tuning sentences' tokens, the scales s = m^alpha (normalised to a geometric mean
range of 1) of the alpha in 0, 0.1, ..., 1 whose quantized group loses least on those tokens,
||X (W - diag(1/s) Q(diag(s) W))||^2 with Q quantrs' 4-bit blocks of 32 (refit). The float model
then gets W' = diag(s) W and a Mul of the activation by 1/s before the group's MatMuls (BERT is
post-norm: its LayerNorm outputs also feed the residual, so the scales cannot be folded into
them), which leaves its outputs unchanged; quantrs quantizes that model.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm  # noqa: E402
from minilm_b32 import embed, report, samples  # noqa: E402

import quantrs  # noqa: E402
from quantrs import QuantizeConfig, kernels  # noqa: E402

ALPHAS = np.linspace(0.0, 1.0, 11)


def blocks4(w: np.ndarray) -> np.ndarray:
    """w [K, N] through quantrs' 4-bit blocks of 32 along K (refit), dequantized."""
    b = kernels.quantize_blocks(np.ascontiguousarray(w, dtype=np.float32), 0, 32, 0, 15, symmetric=False, alphas=(1.0,))
    k = w.shape[0]
    scale, zero = np.repeat(b.scale, 32, axis=0)[:k], np.repeat(b.zero_point, 32, axis=0)[:k]
    return (b.codes.astype(np.float32) - zero) * scale


def groups_of(model: onnx.ModelProto) -> dict[str, list[str]]:
    """activation -> the MatMul weights that read it (2-D, at least 1024 values)."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is not None and w.ndim == 2 and w.size >= 1024:
            groups.setdefault(node.input[0], []).append(node.input[1])
    return groups


def choose_scales(model: onnx.ModelProto, tuning: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    groups = groups_of(model)
    probe = copy.deepcopy(model)
    for name in groups:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(groups, session.run(list(groups), tuning)))
    tokens = tuning["attention_mask"].reshape(-1).astype(bool)  # padding rows left out
    chosen = {}
    for name, members in groups.items():
        x = values[name].reshape(-1, values[name].shape[-1])[tokens].astype(np.float64)
        mean = np.abs(x).mean(axis=0) + 1e-8
        best = (np.inf, np.ones_like(mean))
        for alpha in ALPHAS:
            s = mean**alpha
            s /= np.sqrt(s.max() * s.min())
            loss = 0.0
            for member in members:
                w = weights[member].astype(np.float64)
                back = blocks4((w * s[:, None]).astype(np.float32)).astype(np.float64) / s[:, None]
                loss += float(np.sum((x @ (w - back)) ** 2))
            if loss < best[0]:
                best = (loss, s)
        chosen[name] = best[1]
    return chosen


def smoothed(model: onnx.ModelProto, scales: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The float model with W' = diag(s) W and x / s before each group: the same outputs."""
    out = copy.deepcopy(model)
    inits = {t.name: t for t in out.graph.initializer}
    groups = groups_of(model)
    muls = []
    for name, s in scales.items():
        for member in groups[name]:
            w = numpy_helper.to_array(inits[member])
            inits[member].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), member))
        out.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), f"{name}_awq_inverse"))
        for node in out.graph.node:
            if node.op_type == "MatMul" and node.input[0] == name and node.input[1] in groups[name]:
                node.input[0] = f"{name}_awq"
        muls.append(helper.make_node("Mul", [name, f"{name}_awq_inverse"], [f"{name}_awq"]))
    # each Mul right after the node that writes its activation
    nodes = []
    after = {m.input[0]: m for m in muls}
    for node in out.graph.node:
        nodes.append(node)
        nodes += [after[o] for o in node.output if o in after]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="awq_minilm."))
    src = work / "minilm.onnx"
    model = minilm.build_encoder(minilm.weights_dir())
    onnx.save(model, str(src))
    feeds = minilm.tokenize(minilm.SENTENCES, minilm.weights_dir())
    ref = embed(src, feeds)
    tuning = samples(minilm.TUNING_SENTENCES, stacked=True)
    smooth = work / "smoothed.onnx"
    onnx.save(smoothed(model, choose_scales(model, tuning[0])), str(smooth))
    report("smoothed float model (should be 1.0)", smooth, ref, feeds)
    config = QuantizeConfig(bits=4, block_size=32, quant_format="matmulnbits")
    more = samples(minilm.TUNING_SENTENCES + minilm.HELD_OUT_SENTENCES, stacked=False)
    for label, source, rounding, data in (
        ("nearest", src, "nearest", None),
        ("awq scales + nearest", smooth, "nearest", None),
        ("gptq", src, "gptq", tuning),
        ("awq scales + gptq", smooth, "gptq", tuning),
        ("awq scales + gptq, 48 sentences one sample each", smooth, "gptq", more),
    ):
        out = work / "q.onnx"
        quantrs.quantize(source, out, dataclasses.replace(config, rounding=rounding), data=data)
        report(label, out, ref, feeds)


if __name__ == "__main__":
    main()
