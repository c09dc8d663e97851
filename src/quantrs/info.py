"""`quantrs info`: what a model holds, and what this build of quantrs can do."""

from __future__ import annotations

import os
from collections import Counter
from importlib.metadata import PackageNotFoundError, version

import onnx
from onnx import TensorProto

from quantrs import __version__, kernels
from quantrs.graph import MAIN, GraphIndex
from quantrs.model import load_model
from quantrs.plan import FLOAT_TYPES, quantized_ops
from quantrs.report import BuildInfo, InfoReport, ValueInfo

__all__ = ["inspect_model", "build_info"]


def build_info() -> BuildInfo:
    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    import numpy

    return BuildInfo(
        quantrs=__version__,
        openmp=kernels.openmp_enabled(),
        threads=kernels.default_threads(),
        simd=kernels.simd_build(),
        numpy=numpy.__version__,
        onnx=onnx.__version__,
        onnxruntime=ver("onnxruntime"),
    )


def _value_info(v: onnx.ValueInfoProto) -> ValueInfo:
    t = v.type.tensor_type
    dtype = TensorProto.DataType.Name(t.elem_type) if v.type.HasField("tensor_type") else v.type.WhichOneof("value")
    shape: list[int | str | None] = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            shape.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return ValueInfo(v.name, str(dtype), shape)


def inspect_model(path: str | os.PathLike[str]) -> InfoReport:
    """Opsets, inputs/outputs, node counts by op type (bodies included) and float weight totals
    of a model (initializers and Constant values, in every scope)."""
    model = load_model(path)
    graph = model.proto.graph
    index = GraphIndex(graph)
    initializer_names = {t.name for t in graph.initializer}
    floats = [w for w in model.weights if w.data_type in FLOAT_TYPES]
    return InfoReport(
        path=str(model.path),
        file_bytes=model.file_size,
        ir_version=model.proto.ir_version,
        opsets={(e.domain or "ai.onnx"): e.version for e in model.proto.opset_import},
        producer=" ".join(x for x in (model.proto.producer_name, model.proto.producer_version) if x),
        inputs=[_value_info(v) for v in graph.input if v.name not in initializer_names],
        outputs=[_value_info(v) for v in graph.output],
        node_count=len(graph.node),
        op_counts=dict(Counter(n.op_type for s in index.scopes for n in s.graph.node).most_common()),
        initializer_count=len(graph.initializer),
        float_weight_count=len(floats),
        float_weight_elements=sum(w.size for w in floats),
        float_weight_bytes=sum(w.nbytes for w in floats),
        float_weight_dtypes=dict(Counter(w.dtype_name for w in floats).most_common()),
        constant_weight_count=sum(w.kind == "constant" for w in floats),
        subgraph_weight_count=sum(w.scope != MAIN for w in floats),
        subgraph_count=len(index.scopes) - 1,
        quantized_ops=quantized_ops(index),
        external_data=bool(model.external_files),
        build=build_info(),
    )
