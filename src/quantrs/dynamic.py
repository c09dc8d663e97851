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
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from quantrs.edit import EditContext
from quantrs.graph import FreshName, GraphIndex, name_maker
from quantrs.qdq import DQSpec
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
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if node.op_type == "MatMul" and node.domain in ("", "ai.onnx") and node.input[1] in dq_of:
                nodes.extend(self._matmul(node, dq_of[node.input[1]], fresh))
            elif node.op_type == "DequantizeLinear" and node.output[0] in dq_of:
                continue  # every reader of the weight is a MatMul replaced here (the plan's rule)
            else:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        return []

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
