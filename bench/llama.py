"""A Llama-shaped decoder with random weights, of any width, streamed to disk.

    python bench/llama.py OUT.onnx --size 1.1B [--dtype float16] [--layers N] [--external-data]

The graph is Llama's prefill: token embedding (Gather), then per layer RMSNorm, Q/K/V projections,
rotary position embedding, grouped-query causal attention, the output projection and a residual,
RMSNorm, a SwiGLU MLP (gate, up, down) and a residual; a final RMSNorm and an untied head to the
logits. Input `input_ids` [batch, sequence] (int64), output `logits` [batch, sequence, vocab].
Positions are 0..sequence-1 (no cache): the shape quantizing and prefill latency care about.

Weights are N(0, 1/fan_in) with a few input rows (the same hidden channels in every layer, as
trained LLMs have) scaled by 20. With `--norm-outliers G` the RMSNorm gains of a few hidden
channels (the same in every norm) are G instead of 1, so that the norms' outputs, the inputs of
Q/K/V, gate/up and the head, have outlier channels as trained LLMs' activations do (default: all
gains 1, the model every earlier measurement used). Each tensor is generated when the writer reaches it
(quantrs.writer), so a 13.5 GB 7B model is written in about one tensor's memory. RMSNorm runs in
float32 in a float16 model (Cast around it), as exporters write it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from quantrs.writer import OutTensor, Payload, write_model

OUTLIER_ROWS = 4  # input rows per weight scaled by OUTLIER_SCALE
OUTLIER_SCALE = 20.0
NORM_OUTLIERS = 4  # hidden channels whose RMSNorm gains are --norm-outliers (the others 1)
MAX_POSITIONS = 1024


@dataclass(frozen=True)
class Widths:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def params(self) -> int:
        kv = self.kv_heads * self.head_dim
        layer = 2 * self.hidden * self.hidden + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return 2 * self.vocab * self.hidden + self.layers * layer + self.hidden


SIZES = {
    "1.1B": Widths(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4),  # TinyLlama-1.1B
    "7B": Widths(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32),  # Llama-2-7B
}
_TYPES = {"float32": (TensorProto.FLOAT, np.float32), "float16": (TensorProto.FLOAT16, np.float16)}


def build_decoder(
    path: Path,
    widths: Widths,
    dtype: str = "float16",
    *,
    external_data: bool = True,
    seed: int = 0,
    norm_outliers: float = 0.0,
) -> Path:
    """Write the decoder to `path` (external data in `<path>.data` when asked or over 2 GB).
    `norm_outliers`: the RMSNorm gain of NORM_OUTLIERS hidden channels (0: every gain 1)."""
    elem, np_type = _TYPES[dtype]
    g = _Graph(elem, np_type, seed, norm_outliers)
    h, hd, nh, nkv = widths.hidden, widths.head_dim, widths.heads, widths.kv_heads
    x = g.node("Gather", [g.weight("model.embed_tokens.weight", (widths.vocab, h), fan_in=None), "input_ids"], "embed")
    # Positions 0..S-1, their rotary angles, and the causal mask, from the sequence length.
    seq = g.node(
        "Gather", [g.node("Shape", ["input_ids"], "ids_shape"), g.const("one_index", np.array(1, np.int64))], "seq", axis=0
    )
    positions = g.node(
        "Range", [g.const("zero", np.array(0, np.int64)), seq, g.const("step", np.array(1, np.int64))], "positions"
    )
    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    angles = np.outer(np.arange(MAX_POSITIONS), inv)
    angles = np.concatenate([angles, angles], axis=1)
    cos = g.node("Gather", [g.const("rope.cos", np.cos(angles).astype(np_type)), positions], "cos")
    sin = g.node("Gather", [g.const("rope.sin", np.sin(angles).astype(np_type)), positions], "sin")
    mask_table = np.triu(np.full((MAX_POSITIONS, MAX_POSITIONS), np.finfo(np_type).min, dtype=np_type), k=1)
    ends = g.node(
        "Concat", [g.node("Unsqueeze", [seq, g.const("axis0", np.array([0], np.int64))], "seq_1d")] * 2, "mask_ends", axis=0
    )
    mask = g.node("Slice", [g.const("causal_mask", mask_table), g.const("zeros2", np.array([0, 0], np.int64)), ends], "mask")
    scale = g.const("attn_scale", np.array(1.0 / math.sqrt(hd), np_type))
    half = g.const("rope_split", np.array([hd // 2, hd // 2], np.int64))

    def heads(t: str, n: int, name: str) -> str:  # [B, S, n*hd] -> [B, n, S, hd]
        shaped = g.node("Reshape", [t, g.const(f"shape_heads{n}", np.array([0, 0, n, hd], np.int64))], f"{name}_heads")
        return g.node("Transpose", [shaped], f"{name}_t", perm=[0, 2, 1, 3])

    def rotary(t: str, name: str) -> str:
        first = f"{name}_half0"
        second = f"{name}_half1"
        g.nodes.append(helper.make_node("Split", [t, half], [first, second], name=f"{name}_split", axis=-1))
        rotated = g.node("Concat", [g.node("Neg", [second], f"{name}_neg"), first], f"{name}_rot", axis=-1)
        return g.node(
            "Add", [g.node("Mul", [t, cos], f"{name}_cos"), g.node("Mul", [rotated, sin], f"{name}_sin")], f"{name}_rope"
        )

    def repeat_kv(t: str, name: str) -> str:  # [B, nkv, S, hd] -> [B, nh, S, hd]
        if nkv == nh:
            return t
        wide = g.node(
            "Expand",
            [
                g.node("Unsqueeze", [t, g.const("axis2", np.array([2], np.int64))], f"{name}_u"),
                g.const("kv_repeat", np.array([1, 1, nh // nkv, 1, 1], np.int64)),
            ],
            f"{name}_x",
        )
        return g.node("Reshape", [wide, g.const("shape_kv", np.array([0, nh, -1, hd], np.int64))], f"{name}_rep")

    for i in range(widths.layers):
        p = f"model.layers.{i}"
        y = g.rms_norm(x, f"{p}.input_layernorm", h)
        q = rotary(heads(g.matmul(y, f"{p}.self_attn.q_proj", h, nh * hd), nh, f"{p}.q"), f"{p}.q")
        k = rotary(heads(g.matmul(y, f"{p}.self_attn.k_proj", h, nkv * hd), nkv, f"{p}.k"), f"{p}.k")
        v = heads(g.matmul(y, f"{p}.self_attn.v_proj", h, nkv * hd), nkv, f"{p}.v")
        kt = g.node("Transpose", [repeat_kv(k, f"{p}.k")], f"{p}.kt", perm=[0, 1, 3, 2])
        scores = g.node("Add", [g.node("Mul", [g.node("MatMul", [q, kt], f"{p}.qk"), scale], f"{p}.scaled"), mask], f"{p}.masked")
        probs = g.node("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = g.node("MatMul", [probs, repeat_kv(v, f"{p}.v")], f"{p}.ctx")
        merged = g.node(
            "Reshape",
            [g.node("Transpose", [ctx], f"{p}.ctx_t", perm=[0, 2, 1, 3]), g.const("shape_merge", np.array([0, 0, h], np.int64))],
            f"{p}.merged",
        )
        x = g.node("Add", [x, g.matmul(merged, f"{p}.self_attn.o_proj", nh * hd, h)], f"{p}.attn_residual")
        y = g.rms_norm(x, f"{p}.post_attention_layernorm", h)
        gate = g.matmul(y, f"{p}.mlp.gate_proj", h, widths.intermediate)
        act = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"{p}.gate_sigmoid")], f"{p}.silu")
        up = g.matmul(y, f"{p}.mlp.up_proj", h, widths.intermediate)
        down = g.matmul(g.node("Mul", [act, up], f"{p}.swiglu"), f"{p}.mlp.down_proj", widths.intermediate, h)
        x = g.node("Add", [x, down], f"{p}.mlp_residual")
    logits = g.matmul(g.rms_norm(x, "model.norm", h), "lm_head", h, widths.vocab, output="logits")
    graph = helper.make_graph(
        g.nodes,
        "llama_decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info(logits, elem, ["batch", "sequence", widths.vocab])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quantrs-bench")
    model.ir_version = 8
    write_model(model, g.tensors, path, external_data=external_data)
    return path


class _Graph:
    """Nodes and streamed initializers of the model being built."""

    def __init__(self, elem: int, np_type: type, seed: int, norm_outliers: float = 0.0) -> None:
        self.elem, self.np_type, self.seed, self.norm_outliers = elem, np_type, seed, norm_outliers
        self.nodes: list = []
        self.tensors: list[OutTensor] = []
        self._names: set[str] = set()
        self._count = 0

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self._names:
            self._names.add(name)
            header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(value.dtype), dims=value.shape)
            data = np.ascontiguousarray(value).tobytes()
            self.tensors.append(OutTensor(header, Payload(len(data), lambda data=data: data)))
        return name

    def weight(self, name: str, shape: tuple[int, int], fan_in: int | None) -> str:
        """A [rows, cols] weight, N(0, 1/fan_in) (embeddings: N(0, 1)); a MatMul weight's input
        rows at the outlier channels are scaled by OUTLIER_SCALE."""
        self._count += 1
        key = (self.seed, self._count)
        np_type = self.np_type

        def produce() -> np.ndarray:
            rng = np.random.default_rng(key)
            w = rng.standard_normal(shape, dtype=np.float32)
            if fan_in is not None:
                w *= np.float32(1.0 / math.sqrt(fan_in))
                w[_outlier_rows(shape[0])] *= np.float32(OUTLIER_SCALE)
            return w.astype(np_type, copy=False)

        header = TensorProto(name=name, data_type=self.elem, dims=shape)
        self.tensors.append(OutTensor(header, Payload(int(np.prod(shape)) * np.dtype(np_type).itemsize, produce)))
        return name

    def matmul(self, x: str, name: str, rows: int, cols: int, output: str | None = None) -> str:
        return self.node("MatMul", [x, self.weight(f"{name}.weight", (rows, cols), fan_in=rows)], output or f"{name}.out")

    def rms_norm(self, x: str, name: str, width: int) -> str:
        gains = np.ones(width, self.np_type)
        if self.norm_outliers:
            gains[_outlier_channels(width)] = self.norm_outliers
        gain = self.const(f"{name}.weight", gains)
        wide = x if self.elem == TensorProto.FLOAT else self.node("Cast", [x], f"{name}.f32", to=TensorProto.FLOAT)
        mean = self.node("ReduceMean", [self.node("Mul", [wide, wide], f"{name}.sq")], f"{name}.ms", axes=[-1], keepdims=1)
        root = self.node(
            "Sqrt", [self.node("Add", [mean, self.const("rms_eps", np.array(1e-5, np.float32))], f"{name}.eps")], f"{name}.rms"
        )
        normed = self.node("Div", [wide, root], f"{name}.normed")
        if self.elem != TensorProto.FLOAT:
            normed = self.node("Cast", [normed], f"{name}.back", to=self.elem)
        return self.node("Mul", [normed, gain], f"{name}.out")


def _outlier_rows(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).choice(rows, size=min(OUTLIER_ROWS, rows), replace=False)


def _outlier_channels(width: int) -> np.ndarray:
    return np.random.default_rng(width + 1).choice(width, size=min(NORM_OUTLIERS, width), replace=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="1.1B")
    parser.add_argument("--dtype", choices=sorted(_TYPES), default="float16")
    parser.add_argument("--layers", type=int, help="fewer layers than the size has (same widths)")
    parser.add_argument("--single-file", action="store_true", help="no external data (models under 2 GB only)")
    parser.add_argument(
        "--norm-outliers", type=float, default=0.0, help="RMSNorm gain of a few hidden channels (activation outliers); 0: all 1"
    )
    args = parser.parse_args()
    widths = SIZES[args.size]
    if args.layers:
        widths = Widths(widths.hidden, widths.intermediate, args.layers, widths.heads, widths.kv_heads, widths.vocab)
    build_decoder(args.output, widths, args.dtype, external_data=not args.single_file, norm_outliers=args.norm_outliers)
    print(f"{args.output}: {widths.params / 1e9:.2f}B parameters, {args.dtype}, {widths.layers} layers")


if __name__ == "__main__":
    main()
