"""What a further rewrite of the main graph may use, once the weights' DequantizeLinear nodes are
in: static quantization's activation QDQ (quantrs.activations), dynamic INT8's MatMulInteger
(quantrs.dynamic). An edit sees this narrow context, not the pipeline's writer."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import onnx

from quantrs.writer import OutTensor

__all__ = ["EditContext", "GraphEdit"]


class EditContext(Protocol):
    """The weights being written: `scales` holds, once a weight is written, the scales of those
    named in `keep_scales` (an edit adds names before writing starts); `weight_array` reads a
    stored float tensor of the input."""

    keep_scales: set[str]
    scales: dict[str, np.ndarray]

    def weight_array(self, name: str) -> np.ndarray: ...


class GraphEdit(Protocol):
    """`min_opset` is the opset the edit needs; `apply` edits the graph and returns the
    initializers it adds whose bytes are streamed (after every weight's, so their payloads may
    read the weights' scales)."""

    min_opset: int

    def apply(self, graph: onnx.GraphProto, context: EditContext) -> list[OutTensor]: ...
