"""The float weights a quantized model stands for, read back from its codes as onnxruntime reads
them: a weight-only DequantizeLinear named after the weight, onnxruntime's MatMulNBits and
GatherBlockQuantized, gathered QDQ lookups, and --dynamic's MatMulInteger. validate --detailed,
the HTML report and auto's sensitivity read weights through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs import kernels
from quantrs.graph import GraphIndex
from quantrs.model import LoadedModel, WeightStore

__all__ = ["dequantized_weights", "dequantize_exact", "dequantize_matmulnbits", "dequantize_reader", "float_replacements"]


def dequantized_weights(orig: LoadedModel, quant: LoadedModel) -> dict[str, tuple[onnx.NodeProto, np.ndarray, str]]:
    """name -> (the node that reads its codes, dequantized weight, storage) for every weight of
    the original that the quantized model replaces: by a weight-only DequantizeLinear whose
    output takes its name (or, its codes padded to whole blocks, a Slice of that output), by
    a DequantizeLinear of padded codes that MatMul/Gemm nodes read, or inside onnxruntime's
    MatMulNBits / GatherBlockQuantized, which take the place of the original's MatMul / Gather
    reading it."""
    out = _fused_weights(orig, quant)
    weights = quant.weights
    producer = {o: n for n in quant.proto.graph.node for o in n.output}
    for written in quant.proto.graph.node:
        if written.output and written.output[0] in orig.weights and written.op_type == "DequantizeLinear":
            node = written
        elif written.output and written.output[0] in orig.weights and _cuts_padded(written, producer):
            node = producer[written.input[0]]  # the weight's codes padded to whole blocks, cut back by this Slice
        else:
            continue
        if any(name and name not in weights for name in node.input):
            continue
        info = weights.info(node.input[0])
        codes = np.asarray(weights.array(node.input[0]))
        scale = np.asarray(weights.array(node.input[1]), dtype=np.float32)
        zp = (
            np.asarray(weights.array(node.input[2])).astype(np.int64)
            if len(node.input) > 2 and node.input[2]
            else np.zeros(scale.shape, np.int64)
        )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        code_type = _KERNEL_CODES.get(info.data_type)
        if attrs.get("block_size") or code_type is None or scale.ndim > 1:
            # blocks, or codes the kernel does not take (INT32 biases, 16-bit): in numpy, exactly
            value = dequantize_exact(codes, scale, zp, attrs.get("axis", 1), attrs.get("block_size"))
        else:
            axis = attrs.get("axis", 1) if scale.size > 1 else None
            value = kernels.dequantize(codes.astype(code_type), scale.reshape(-1), zp.reshape(-1).astype(np.int32), axis)
        cut = _cut(value, orig.weights.info(written.output[0]).shape)
        if cut is not None:
            out[written.output[0]] = (node, cut, info.dtype_name)
    return out


def _cuts_padded(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> bool:
    """`node` is a Slice of a DequantizeLinear's output: a weight whose codes are padded to whole
    blocks, cut back to its shape (qdq._dequantize)."""
    return node.op_type == "Slice" and getattr(producer.get(node.input[0]), "op_type", "") == "DequantizeLinear"


def _cut(value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`value` cut to `shape` when it is that shape padded along one axis (codes padded to whole
    blocks); `value` itself when it has the shape; None when it is neither."""
    if value.shape == tuple(shape):
        return value
    longer = [k for k, (have, want) in enumerate(zip(value.shape, shape)) if have != want]
    if value.ndim != len(shape) or len(longer) != 1 or value.shape[longer[0]] < shape[longer[0]]:
        return None
    return np.ascontiguousarray(value[tuple(slice(0, d) for d in shape)])


@dataclass(frozen=True)
class _Reader:
    """A node of the quantized model's main graph that stands for an original MatMul or Gather
    of a weight and holds the weight's codes: com.microsoft.MatMulNBits, GatherBlockQuantized,
    or the DequantizeLinear of a QDQ lookup (its codes, scales and zero points gathered by
    row), whose output reaches the original node's (directly, or through Reshape/Cast/Slice);
    or the DequantizeLinear of codes padded to whole blocks that a MatMul/Gemm writing the
    original node's output reads."""

    weight: str
    holder: onnx.NodeProto = field(repr=False)
    original: onnx.NodeProto = field(repr=False)
    stored: tuple[str, ...]  # codes, scales[, zero points]: initializers of the quantized model


def _readers(orig: LoadedModel, quant: LoadedModel) -> list[_Reader]:
    """Every such node, found through the original node that wrote the same output (walking
    from the holder through Reshape and Cast). Nodes whose codes onnxruntime reads in a way
    dequantize_reader does not (MatMulNBits with g_idx) are left out."""
    weights = quant.weights
    nodes = list(quant.proto.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    original = {o: n for n in orig.proto.graph.node for o in n.output}
    out = []
    for node in nodes:
        padded = _padded_reader(node, orig, weights, producer, original)
        if padded is not None:
            out.append(padded)
            continue
        read = _stored_reads(node, weights, producer, consumers)
        if read is None:
            continue
        stored, reads, wanted = read
        if any(i not in weights for i in stored):
            continue
        source = _original_node(node, consumers, original)
        if source is None or source.op_type != wanted or source.input[reads] not in orig.weights:
            continue
        out.append(_Reader(source.input[reads], node, source, stored))
    return out


def _padded_reader(
    node: onnx.NodeProto,
    orig: LoadedModel,
    weights: WeightStore,
    producer: dict[str, onnx.NodeProto],
    original: dict[str, onnx.NodeProto],
) -> _Reader | None:
    """A MatMul/Gemm reading its weight padded to whole blocks (a DequantizeLinear of stored
    codes whose output is not the weight's name), its data input padded to match: the reader
    of the original node writing the same output; None for any other node."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.output[0] not in original:
        return None
    dq, source = producer.get(node.input[1]), original[node.output[0]]
    if dq is None or dq.op_type != "DequantizeLinear" or dq.output[0] in orig.weights or source.op_type != node.op_type:
        return None
    if len(source.input) < 2 or source.input[1] not in orig.weights or any(i and i not in weights for i in dq.input):
        return None
    return _Reader(source.input[1], dq, source, tuple(i for i in dq.input if i))


def _stored_reads(
    node: onnx.NodeProto, weights: WeightStore, producer: dict[str, onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]]
) -> tuple[tuple[str, ...], int, str] | None:
    """What a node holding quantized codes reads: its stored inputs (codes, scales[, zero
    points]), and the input index and op type of the original node it replaces; None for any
    other node."""
    if node.domain == "com.microsoft" and node.op_type == "MatMulNBits":
        if len(node.input) > 4 and node.input[4]:  # g_idx reorders the rows' groups
            return None
        return tuple(i for i in node.input[1:4] if i), 1, "MatMul"
    if node.domain == "com.microsoft" and node.op_type == "GatherBlockQuantized":
        return tuple(i for i in (node.input[0], *node.input[2:4]) if i), 0, "Gather"
    if node.op_type == "MatMulInteger" and node.input[1] in weights:  # --dynamic: the weight's scale is in the rescale Mul
        scale = _dynamic_scale(node, producer, consumers)
        if scale is None or scale not in weights:
            return None
        return (node.input[1], scale, *(node.input[3:4] if len(node.input) > 3 and node.input[3] else ())), 1, "MatMul"
    if (
        node.op_type == "DequantizeLinear"
        and node.input[0] not in weights
        and getattr(producer.get(node.input[0]), "op_type", "") in ("Gather", "Reshape")
    ):
        found = [_gathered(i, weights, producer) for i in node.input if i]
        if None in found:
            return None
        return tuple(i for i in found if i), 0, "Gather"
    return None


def _gathered(name: str, weights: WeightStore, producer: dict[str, onnx.NodeProto]) -> str | None:
    """The initializer a lookup's value is gathered from by row (then reshaped, for blocks), or
    the value if stored."""
    if name in weights:
        return name
    gather = producer.get(name)
    if gather is not None and gather.op_type == "Reshape":
        gather = producer.get(gather.input[0])
    if gather is None or gather.op_type != "Gather" or gather.input[0] not in weights:
        return None
    return gather.input[0] if all(a.i == 0 for a in gather.attribute if a.name == "axis") else None


def _original_node(
    node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], original: dict[str, onnx.NodeProto]
) -> onnx.NodeProto | None:
    """The original model's node that wrote the value `node` (followed through Reshape, Cast
    and Slice, or a MatMulInteger's rescale Mul) now writes."""
    last = node
    passes = ("Reshape", "Cast", "Mul") if node.op_type == "MatMulInteger" else ("Reshape", "Cast", "Slice")  # Mul: the rescale
    while last.output[0] not in original:
        after = consumers.get(last.output[0], [])
        if len(after) != 1 or after[0].op_type not in passes:
            break
        last = after[0]
    return original.get(last.output[0])


def _dynamic_scale(
    node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], consumers: dict[str, list[onnx.NodeProto]]
) -> str | None:
    """The weight scale of a MatMulInteger in quantrs.dynamic's form: MatMulInteger -> Cast ->
    Mul(product, Mul(x_scale, [Cast] W_scale)); None for any other arrangement."""
    after = consumers.get(node.output[0], [])
    if len(after) != 1 or after[0].op_type != "Cast":
        return None
    rescale = consumers.get(after[0].output[0], [])
    if len(rescale) != 1 or rescale[0].op_type != "Mul":
        return None
    scales = producer.get(next((i for i in rescale[0].input if i != after[0].output[0]), ""))
    if scales is None or scales.op_type != "Mul":
        return None
    x_scale = node.input[2] and producer.get(node.input[0])
    other = [i for i in scales.input if not (x_scale and i == x_scale.output[1])]
    if len(other) != 1:
        return None
    cast = producer.get(other[0])
    return cast.input[0] if cast is not None and cast.op_type == "Cast" else other[0]


def dequantize_reader(reader: _Reader, quant: LoadedModel) -> tuple[np.ndarray, str]:
    """The float32 weight a reader's codes stand for, dequantized as onnxruntime does (the
    schemas' defaults for missing attributes), and how it is stored."""
    weights = quant.weights
    node = reader.holder
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    arrays = [np.asarray(weights.array(name)) for name in reader.stored]
    codes, scale, zero_point = arrays[0], arrays[1].astype(np.float32), (arrays[2] if len(arrays) > 2 else None)
    info = weights.info(reader.stored[0])
    if node.op_type == "MatMulNBits":
        bits = attrs.get("bits", 4)
        value = dequantize_matmulnbits(codes, scale, zero_point, attrs["K"], attrs["N"], bits, attrs["block_size"])
        return value, f"UINT{bits} (MatMulNBits)"
    if node.op_type == "MatMulInteger":  # codes [K, N], one scale per column
        zero_point = zero_point.astype(np.int64) if zero_point is not None else np.zeros(scale.shape, np.int64)
        return dequantize_exact(codes, scale, zero_point, codes.ndim - 1, None), "INT8 (MatMulInteger)"
    if node.op_type == "GatherBlockQuantized":
        bits = attrs.get("bits", 4)
        if info.data_type == TensorProto.UINT8 and bits == 4:  # two codes a byte, low nibble first
            codes = _unpacked(codes, 4)
            if zero_point is not None and zero_point.dtype.kind != "f":
                zero_point = _unpacked(zero_point, 4)
        if zero_point is None:  # 0 for signed codes, the middle code of unsigned ones
            signed = info.data_type in (TensorProto.INT4, TensorProto.INT8)
            zero_point = np.full(scale.shape, 0 if signed else 1 << (bits - 1), np.int64)
        zero_point = zero_point[..., : scale.shape[-1]]
        value = dequantize_exact(
            codes, scale, zero_point.astype(np.int64), attrs.get("quantize_axis", 1), attrs.get("block_size", 128)
        )
        return value, f"{info.dtype_name} (GatherBlockQuantized)"
    block = attrs.get("block_size")
    zero_point = zero_point.astype(np.int64) if zero_point is not None else np.zeros(scale.shape, np.int64)
    if reader.stored[0] == node.input[0]:  # the whole weight dequantized (padded), read by a MatMul/Gemm
        return dequantize_exact(codes, scale, zero_point, attrs.get("axis", 1), block), info.dtype_name
    if not block and scale.ndim == 2:  # a lookup dequantized block by block: scales [rows, blocks]
        block = codes.shape[-1] // scale.shape[-1]
    value = dequantize_exact(codes, scale, zero_point, codes.ndim - 1 if block else 0, block)  # by row, or blocks along it
    return value, info.dtype_name


def _fused_weights(orig: LoadedModel, quant: LoadedModel) -> dict[str, tuple[onnx.NodeProto, np.ndarray, str]]:
    """The weights held by MatMulNBits, GatherBlockQuantized and QDQ lookups, each dequantized
    once (a weight read by several such nodes has the same codes in all), as dequantized_weights
    gives them; one whose values do not come out in the original's shape is left out."""
    out: dict[str, tuple[onnx.NodeProto, np.ndarray, str]] = {}
    for reader in _readers(orig, quant):
        if reader.weight in out:
            continue
        value, storage = dequantize_reader(reader, quant)
        cut = _cut(value, orig.weights.info(reader.weight).shape)  # (codes padded to whole blocks: cut back)
        if cut is not None:
            out[reader.weight] = (reader.holder, cut, storage)
    return out


def float_replacements(orig: LoadedModel, quant: LoadedModel) -> tuple[dict[str, list[onnx.NodeProto]], set[str]]:
    """For putting weights back in float: weight -> the original nodes that replace the
    quantized model's nodes writing their outputs, and the weights that cannot be put back
    whole (read somewhere neither such a node nor a DequantizeLinear named after them covers:
    a second reader of another kind, a lookup inside a body)."""
    producer = {o: n for n in quant.proto.graph.node for o in n.output}
    dense = {n.output[0] for n in quant.proto.graph.node if n.op_type == "DequantizeLinear" or _cuts_padded(n, producer)}
    replacements: dict[str, list[onnx.NodeProto]] = {}
    covered: dict[str, set[str]] = {}
    for reader in _readers(orig, quant):
        node = onnx.NodeProto()
        node.CopyFrom(reader.original)  # its inputs are all values of the quantized model too
        replacements.setdefault(reader.weight, []).append(node)
        covered.setdefault(reader.weight, set()).add(reader.original.output[0])
    index = GraphIndex(orig.proto.graph)
    partial = set()
    for weight, outputs in covered.items():
        if weight in dense:
            continue  # its other readers read the DequantizeLinear's output, dropped with it
        if any(use.scope is not index.main or use.node.output[0] not in outputs for use in index.uses.get(weight, [])):
            partial.add(weight)
    return replacements, partial


def dequantize_matmulnbits(
    packed: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, k: int, n: int, bits: int, block: int
) -> np.ndarray:
    """The [K, N] float32 weight of a MatMulNBits: codes [N, blocks, block * bits / 8] packed low
    bits first, scales [N * blocks], zero points packed the same way per column (default the
    middle code, 2**(bits - 1)) or float (then subtracted as values)."""
    blocks = -(-k // block)
    codes = _unpacked(packed.reshape(n, -1), bits)[:, : blocks * block].astype(np.float64)
    scale = scale.reshape(n, blocks).astype(np.float64)
    if zero_point is None:
        zp = np.full((n, blocks), 1 << (bits - 1), np.float64)
    elif zero_point.dtype.kind == "f":
        zp = zero_point.reshape(n, blocks).astype(np.float64)
    else:
        zp = _unpacked(zero_point.reshape(n, -1), bits)[:, :blocks].astype(np.float64)
    value = (codes.reshape(n, blocks, block) - zp[:, :, None]) * scale[:, :, None]
    return np.ascontiguousarray(value.reshape(n, blocks * block)[:, :k].T).astype(np.float32)


def _unpacked(raw: np.ndarray, bits: int) -> np.ndarray:
    """Bytes [..., m] holding 4-bit codes two a byte, low nibble first, as [..., 2 m] codes
    (kernels.unpack4); 8-bit codes as they are."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if bits == 8:
        return raw
    return kernels.unpack4(raw.reshape(-1), 2 * raw.size, signed=False).reshape(*raw.shape[:-1], -1)


_KERNEL_CODES: dict[int, type[np.integer]] = {
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT4: np.int8,
    TensorProto.UINT4: np.uint8,
}


def dequantize_exact(codes: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, block: int | None) -> np.ndarray:
    """DequantizeLinear in numpy for any code type: per tensor, per axis, or in blocks along axis."""
    if scale.size == 1:
        return ((codes.astype(np.float64) - float(zp.reshape(-1)[0])) * float(scale.reshape(-1)[0])).astype(np.float32)
    axis %= codes.ndim
    if block:  # each scale covers `block` values along axis, the last block short
        expand = lambda p: np.repeat(p, block, axis=axis).take(np.arange(codes.shape[axis]), axis=axis)  # noqa: E731
        scale, zp = expand(scale), expand(zp)
    else:
        view = [1] * codes.ndim
        view[axis] = codes.shape[axis]
        scale, zp = scale.reshape(view), zp.reshape(view)
    return ((codes.astype(np.float64) - zp) * scale.astype(np.float64)).astype(np.float32)
