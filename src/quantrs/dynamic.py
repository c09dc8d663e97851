"""Dynamic INT8: MatMul weights stored as INT8 codes, activations quantized at run time.

Each main-graph MatMul whose weight the plan marked `dynamic` (a 2-D float32/float16 initializer
read only as MatMul weights) becomes onnxruntime's dynamic-quantization form, standard ONNX ops
only:

    x ─(Cast to float32)─> DynamicQuantizeLinear ─> x_q, x_scale, x_zero_point
    MatMulInteger(x_q, W_quantized, x_zero_point)  (INT8 codes, symmetric: zero point 0)
    Mul(Cast(MatMulInteger, float32), x_scale * W_scale) ─(Cast back)─> y

onnxruntime fuses it (graph optimizations, the default level) into DynamicQuantizeMatMul /
MatMulIntegerToFloat, its integer GEMM: the form `quantize_dynamic` writes. The codes and scales
are the weight's per-channel INT8 ones (axis 1: one scale per output column), streamed like any
other weight's; the edit only replaces the DequantizeLinear -> MatMul pair the rewrite made.

An LSTM whose W and R are both `dynamic` becomes com.microsoft.DynamicQuantizeLSTM (as
`quantize_dynamic` writes it). That op takes W and R as [directions, inputs, 4 * hidden] codes and
their scales and zero points as [directions, 4 * hidden] (per channel) or [directions]: the codes
are stored as the LSTM reads them ([directions, 4 * hidden, inputs], per channel along the gate
rows) and a Transpose and Expand nodes on constants make that layout, which onnxruntime folds
when the session starts (the kernel then packs W and R once, as for quantize_dynamic's output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from quantrs.edit import EditContext
from quantrs.graph import FreshName, GraphIndex, name_maker
from quantrs.qdq import MICROSOFT_DOMAIN, DQSpec
from quantrs.writer import OutTensor

__all__ = ["DynamicEdit", "DYNAMIC_OPSET"]

DYNAMIC_OPSET = 11  # DynamicQuantizeLinear
FORM = "DynamicQuantizeLinear + MatMulInteger"


@dataclass
class DynamicEdit:
    """The dynamic rewrite of the main graph's MatMuls, after the weights' DequantizeLinear
    nodes are in (a quantrs.edit.GraphEdit)."""

    specs: dict[str, DQSpec]  # the weights read through MatMulInteger (DQSpec.dynamic)
    min_opset: int = DYNAMIC_OPSET

    def apply(self, graph: onnx.GraphProto, context: EditContext) -> list[OutTensor]:
        fresh = name_maker(GraphIndex(graph).all_names())
        dq_of = {
            node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear" and node.output[0] in self.specs
        }

        def form(node: onnx.NodeProto) -> str | None:
            if node.domain not in ("", "ai.onnx"):
                return None
            if node.op_type == "MatMul" and node.input[1] in dq_of:
                return "matmul"
            if node.op_type == "LSTM" and len(node.input) > 2 and node.input[1] in dq_of and node.input[2] in dq_of:
                return "lstm"  # an LSTM with one of W, R left float keeps reading the DequantizeLinear
            return None

        still_read = {name for node in graph.node if form(node) is None for name in node.input}
        still_read |= {v.name for v in graph.output}
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            kind = form(node)
            if kind == "matmul":
                nodes.extend(self._matmul(node, dq_of[node.input[1]], fresh))
            elif kind == "lstm":
                nodes.extend(self._lstm(node, dq_of[node.input[1]], dq_of[node.input[2]], fresh))
            elif node.op_type == "DequantizeLinear" and node.output[0] in dq_of and node.output[0] not in still_read:
                continue  # every reader of the weight is replaced here
            else:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        return []

    def _lstm(self, node: onnx.NodeProto, w: onnx.NodeProto, r: onnx.NodeProto, fresh: FreshName) -> list[onnx.NodeProto]:
        base = node.name or node.output[0] or "lstm"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}
        directions = 2 if attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        out: list[onnx.NodeProto] = []

        def operand(dq: onnx.NodeProto) -> list[str]:
            """dq's codes as [directions, inputs, 4 * hidden], its scale and zero point as
            [directions, 4 * hidden] (per channel) or [directions] (per tensor)."""
            codes, scale = dq.input[0], dq.input[1]
            zero = dq.input[2] if len(dq.input) > 2 and dq.input[2] else ""
            spec = self.specs[dq.output[0]]
            rows = [directions, spec.shape[1]] if spec.axis is not None else [directions]
            names = [fresh(f"{codes}_transposed"), fresh(f"{scale}_{directions}d"), fresh(f"{codes}_zero_point_{directions}d")]
            shape = fresh(f"{base}_{dq.output[0]}_parameter_shape")
            out.append(helper.make_node("Transpose", [codes], [names[0]], name=fresh(f"{base}_transpose"), perm=[0, 2, 1]))
            out.append(
                helper.make_node(
                    "Constant",
                    [],
                    [shape],
                    name=fresh(f"{base}_shape"),
                    value=helper.make_tensor(shape, TensorProto.INT64, [len(rows)], rows),
                )
            )
            out.append(helper.make_node("Expand", [scale, shape], [names[1]], name=fresh(f"{base}_expand_scale")))
            if zero:
                out.append(helper.make_node("Expand", [zero, shape], [names[2]], name=fresh(f"{base}_expand_zero_point")))
            else:  # symmetric INT8 without a stored zero point: zeros of the codes' type
                zeros = helper.make_tensor(names[2], TensorProto.INT8, rows, [0] * int(np.prod(rows)))
                out.append(helper.make_node("Constant", [], [names[2]], name=fresh(f"{base}_zero_point"), value=zeros))
            return names

        (wq, ws, wz), (rq, rs, rz) = operand(w), operand(r)
        rest = [*node.input[3:8], *[""] * (8 - max(3, len(node.input)))]  # B, sequence_lens, initial_h, initial_c, P
        out.append(
            helper.make_node(
                "DynamicQuantizeLSTM",
                [node.input[0], wq, rq, *rest, ws, wz, rs, rz],
                list(node.output),
                name=fresh(f"{base}_dynamic"),
                domain=MICROSOFT_DOMAIN,
                **attrs,
            )
        )
        return out

    def _matmul(self, node: onnx.NodeProto, dq: onnx.NodeProto, fresh: FreshName) -> list[onnx.NodeProto]:
        spec = self.specs[node.input[1]]
        codes, scale = dq.input[0], dq.input[1]
        x, y = node.input[0], node.output[0]
        base = node.name or y
        half = spec.scale_type == TensorProto.FLOAT16  # a float16 weight: MatMul's input is float16 too
        out: list[onnx.NodeProto] = []
        if half:  # DynamicQuantizeLinear takes float32 only
            wide = fresh(f"{x}_float")
            out.append(helper.make_node("Cast", [x], [wide], name=fresh(f"{base}_cast_input"), to=TensorProto.FLOAT))
            x = wide
        if half:
            scale_f32 = fresh(f"{scale}_float")
            out.append(helper.make_node("Cast", [scale], [scale_f32], name=fresh(f"{base}_cast_scale"), to=TensorProto.FLOAT))
            scale = scale_f32
        xq, xs, xz = fresh(f"{x}_quantized"), fresh(f"{x}_scale"), fresh(f"{x}_zero_point")
        scales, product, product_f = fresh(f"{base}_scales"), fresh(f"{y}_int32"), fresh(f"{y}_int32_float")
        result = fresh(f"{y}_float") if half else y
        out += [
            helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz], name=fresh(f"{base}_quantize_input")),
            helper.make_node("Mul", [xs, scale], [scales], name=fresh(f"{base}_scales")),
            helper.make_node("MatMulInteger", [xq, codes, xz], [product], name=fresh(f"{base}_matmul_integer")),
            helper.make_node("Cast", [product], [product_f], name=fresh(f"{base}_cast_product"), to=TensorProto.FLOAT),
            helper.make_node("Mul", [product_f, scales], [result], name=fresh(f"{base}_rescale")),
        ]
        if half:
            out.append(helper.make_node("Cast", [result], [y], name=fresh(f"{base}_cast_output"), to=TensorProto.FLOAT16))
        return out
