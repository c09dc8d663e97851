"""The numpy twins against independent oracles: onnx's reference QuantizeLinear/DequantizeLinear
and onnx.numpy_helper's INT4 bytes. If these hold, kernel == twin means kernel == ONNX."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quantrs import reference as R

finite32 = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)


def onnx_quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int | None) -> np.ndarray:
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "q",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape)),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, list(scale.shape)),
            helper.make_tensor_value_info("z", helper.np_dtype_to_tensor_dtype(zp.dtype), list(zp.shape)),
        ],
        [helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(zp.dtype), None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ReferenceEvaluator(model).run(None, {"x": x, "s": scale, "z": zp})[0]


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=8), elements=finite32),
    signed=st.booleans(),
    symmetric=st.booleans(),
    per_channel=st.booleans(),
)
def test_quantize_twin_matches_onnx_quantize_linear(x, signed, symmetric, per_channel):
    qmin, qmax = (-127 if symmetric else -128, 127) if signed else (0, 255)
    axis = 1 if per_channel else None
    x3 = x.reshape(x.shape[0], x.shape[1], -1) if per_channel else x.reshape(1, 1, -1)
    scale, zp = R.scales(x3.min(axis=(0, 2)), x3.max(axis=(0, 2)), qmin, qmax, symmetric)
    ours = R.quantize(x3, scale, zp, qmin, qmax).reshape(x.shape)
    zp_typed = zp.astype(np.int8 if signed else np.uint8)
    if per_channel:
        theirs = onnx_quantize(x, scale, zp_typed, axis)
    else:
        theirs = onnx_quantize(x, scale.reshape(()), zp_typed.reshape(()), None)
    np.testing.assert_array_equal(ours.view(np.int8) if signed else ours, theirs)


def test_rounding_is_half_to_even_and_saturates():
    x3 = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0], np.float32).reshape(1, 1, -1)
    q = R.quantize(x3, np.ones(1, np.float32), np.zeros(1, np.int32), -128, 127).view(np.int8)
    assert q.ravel().tolist() == [0, 2, 2, 0, -2, 127, -128]


def test_scales_match_onnxruntime_conventions():
    lo, hi = np.array([-1.0, 0.5, 0.0], np.float32), np.array([3.0, 2.0, 0.0], np.float32)
    scale, zp = R.scales(lo, hi, 0, 255, symmetric=False)
    assert scale[0] == np.float32(4.0 / 255) and zp[0] == 64
    assert zp[1] == 0  # range widened to include 0
    assert scale[2] == 1.0 and zp[2] == 0  # empty range: scale 1
    scale, zp = R.scales(lo, hi, -127, 127, symmetric=True)
    assert scale[0] == np.float32(6.0 / 254) and zp.tolist() == [0, 0, 0]
    _, zp = R.scales(lo, hi, 0, 255, symmetric=True)
    assert zp.tolist() == [128, 128, 128]  # as onnxruntime: round((0 + 255) / 2) to even


@settings(max_examples=60, deadline=None)
@given(codes=hnp.arrays(np.int8, st.integers(0, 41), elements=st.integers(-8, 7)))
def test_pack4_twin_matches_numpy_helper_int4(codes):
    expected = numpy_helper.from_array(codes.astype(ml_dtypes.int4)).raw_data
    assert R.pack4(codes.view(np.uint8)).tobytes() == expected
    unpacked = R.unpack4(R.pack4(codes.view(np.uint8)), codes.size, signed=True)
    np.testing.assert_array_equal(unpacked.view(np.int8), codes)


@settings(max_examples=30, deadline=None)
@given(codes=hnp.arrays(np.uint8, st.integers(0, 41), elements=st.integers(0, 15)))
def test_pack4_twin_matches_numpy_helper_uint4(codes):
    assert R.pack4(codes).tobytes() == numpy_helper.from_array(codes.astype(ml_dtypes.uint4)).raw_data
    np.testing.assert_array_equal(R.unpack4(R.pack4(codes), codes.size, signed=False), codes)


@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_twin_is_dequantize_linear(signed):
    codes = np.arange(-8, 8, dtype=np.int8).reshape(1, 2, 8) if signed else np.arange(16, dtype=np.uint8).reshape(1, 2, 8)
    scale = np.array([0.5, 0.25], np.float32)
    zp = np.array([1, -2] if signed else [3, 9], np.int32)
    expected = (codes.astype(np.float32) - zp.reshape(1, 2, 1)) * scale.reshape(1, 2, 1)
    np.testing.assert_array_equal(R.dequantize(codes, scale, zp), expected)
