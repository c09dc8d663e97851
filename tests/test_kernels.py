"""Every compiled kernel equals its numpy twin (quantrs.reference) bit for bit, on 1 and 2
threads, and the checked front (quantrs.kernels) refuses bad input before compiled code runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantrs import kernels as K
from quantrs import reference as R
from quantrs.errors import NonFiniteWeightError

finite32 = st.floats(-1e4, 1e4, width=32, allow_nan=False, allow_infinity=False)
RANGES = [
    (-127, 127, True),
    (-128, 127, False),
    (0, 255, False),
    (0, 255, True),
    (-7, 7, True),
    (-8, 7, True),
    (0, 15, False),
    (-8, 7, False),
]


# Let the kernels use 2 threads on tiny arrays (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("parallel_even_when_tiny")


threads = pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])


def tensors(max_side: int = 9):
    shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=max_side)
    return hnp.arrays(np.float32, shapes, elements=finite32)


def axes_for(x: np.ndarray):
    return st.sampled_from([None, *range(x.ndim)])


def check_all_kernels(x: np.ndarray, axis, qrange, n_threads: int) -> None:
    qmin, qmax, symmetric = qrange
    x3 = K.channel_view(x, axis)
    rng = K.minmax(x, axis, n_threads=n_threads)
    lo, hi, bad = R.minmax(x3)
    assert not bad
    np.testing.assert_array_equal(rng.lo, lo)
    np.testing.assert_array_equal(rng.hi, hi)

    scale, zp = K.scales(rng, qmin, qmax, symmetric=symmetric)
    scale_ref, zp_ref = R.scales(lo, hi, qmin, qmax, symmetric)
    assert scale.tobytes() == scale_ref.tobytes()
    np.testing.assert_array_equal(zp, zp_ref)

    codes = K.quantize(x, scale, zp, qmin, qmax, axis, n_threads=n_threads)
    codes_ref = R.quantize(x3, scale, zp, qmin, qmax)
    assert codes.shape == x.shape
    np.testing.assert_array_equal(codes.reshape(x3.shape), codes_ref)

    signed = qmin < 0
    typed = codes.view(np.int8) if signed else codes
    deq = K.dequantize(typed, scale, zp, axis, n_threads=n_threads)
    np.testing.assert_array_equal(deq.reshape(x3.shape), R.dequantize(typed.reshape(x3.shape), scale, zp))

    sse, max_abs = K.channel_error(x, codes, scale, zp, axis, signed=signed, n_threads=n_threads)
    sse_ref, max_ref = R.channel_error(x3, codes_ref, signed, scale, zp)
    assert sse.tobytes() == sse_ref.tobytes()
    np.testing.assert_array_equal(max_abs, max_ref)

    fused_codes, fused_sse, fused_max = K.quantize_with_error(x, scale, zp, qmin, qmax, axis, n_threads=n_threads)
    np.testing.assert_array_equal(fused_codes.reshape(x3.shape), codes_ref)
    assert fused_sse.tobytes() == sse_ref.tobytes()
    np.testing.assert_array_equal(fused_max, max_ref)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), qrange=st.sampled_from(RANGES))
@threads
def test_kernels_equal_twins(data, qrange, threads):
    x = data.draw(tensors())
    axis = data.draw(axes_for(x))
    check_all_kernels(x, axis, qrange, threads)


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((3, 70_000), 0),  # runs longer than one parallel block (65,536)
        ((2, 3, 9_000), 1),  # several error blocks (4,096) per run, outer > 1
        ((5, 9_000), 1),  # row layout wider than one column span (4,096)
        ((1_100, 5), 1),  # row layout: 16 row groups of 69 rows, the last one short
        ((130, 3), 1),  # row layout: groups of the minimum 64 rows, the last one of 2
        ((140_000,), None),  # per-tensor across several blocks
        ((4, 6, 1, 1), 1),  # ConvTranspose-like short runs
    ],
)
@pytest.mark.parametrize("qrange", [RANGES[0], RANGES[2], RANGES[5]])
@threads
def test_kernels_equal_twins_across_blocks(shape, axis, qrange, threads):
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32) * 3
    check_all_kernels(x, axis, qrange, threads)


@pytest.mark.parametrize("axis", [0, 1])
@threads
def test_error_of_saturated_codes_equals_twin(axis, threads):
    """A scale far too small for the values: most codes saturate and the float32 error
    x - dequantized rounds. Kernel and twin still agree bit for bit."""
    x = np.random.default_rng(11).standard_normal((300, 70)).astype(np.float32) * 1e3
    channels = x.shape[axis]
    scale = np.full(channels, 1e-3, dtype=np.float32)
    zp = np.zeros(channels, dtype=np.int32)
    x3 = K.channel_view(x, axis)
    codes_ref = R.quantize(x3, scale, zp, -128, 127)
    sse_ref, max_ref = R.channel_error(x3, codes_ref, True, scale, zp)
    codes, sse, max_abs = K.quantize_with_error(x, scale, zp, -128, 127, axis, n_threads=threads)
    np.testing.assert_array_equal(codes.reshape(x3.shape), codes_ref)
    assert sse.tobytes() == sse_ref.tobytes()
    np.testing.assert_array_equal(max_abs, max_ref)
    sse2, max2 = K.channel_error(x, codes, scale, zp, axis, signed=True, n_threads=threads)
    assert sse2.tobytes() == sse_ref.tobytes()
    np.testing.assert_array_equal(max2, max_ref)


def test_reference_mirrors_the_kernels_summation_order_constants():
    from quantrs import _quant

    assert (R.ROW_GROUP_MIN, R.ROW_GROUPS_MAX) == (_quant.ROW_GROUP_MIN_ROWS, _quant.ROW_GROUPS_MAX_COUNT)
    assert R.ERR_BLOCK == _quant.ERR_BLOCK_VALUES


def test_one_and_two_threads_agree_at_real_sizes():
    x = np.random.default_rng(3).standard_normal((512, 1024)).astype(np.float32)
    for axis in (None, 0, 1):
        results = []
        for n in (1, 2):
            rng = K.minmax(x, axis, n_threads=n)
            scale, zp = K.scales(rng, 0, 255, symmetric=False)
            codes = K.quantize(x, scale, zp, 0, 255, axis, n_threads=n)
            sse, mx = K.channel_error(x, codes, scale, zp, axis, signed=False, n_threads=n)
            results.append((codes.tobytes(), sse.tobytes(), mx.tobytes(), K.pack4(codes, n_threads=n).tobytes()))
        assert results[0] == results[1]


@settings(max_examples=100, deadline=None)
@given(codes=hnp.arrays(np.uint8, st.integers(0, 300), elements=st.integers(0, 255)), signed=st.booleans())
@threads
def test_pack_unpack_equal_twins(codes, signed, threads):
    packed = K.pack4(codes, n_threads=threads)
    np.testing.assert_array_equal(packed, R.pack4(codes))
    unpacked = K.unpack4(packed, codes.size, signed=signed, n_threads=threads)
    np.testing.assert_array_equal(unpacked, R.unpack4(packed, codes.size, signed))


@threads
def test_pack_unpack_large_odd_length(threads):
    codes = np.random.default_rng(0).integers(0, 16, size=300_001).astype(np.uint8)
    packed = K.pack4(codes, n_threads=threads)
    np.testing.assert_array_equal(packed, R.pack4(codes))
    np.testing.assert_array_equal(K.unpack4(packed, codes.size, signed=False, n_threads=threads), codes)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), qrange=st.sampled_from(RANGES))
def test_dequantization_error_is_at_most_half_a_step(data, qrange):
    qmin, qmax, symmetric = qrange
    x = data.draw(tensors())
    axis = data.draw(axes_for(x))
    rng = K.minmax(x, axis)
    scale, zp = K.scales(rng, qmin, qmax, symmetric=symmetric)
    codes = K.quantize(x, scale, zp, qmin, qmax, axis)
    _, max_abs = K.channel_error(x, codes, scale, zp, axis, signed=qmin < 0)
    # Inside the range every value is within half a step (plus float32 rounding of the product).
    assert np.all(max_abs <= scale * 0.5 * (1 + 1e-5) + np.abs(np.maximum(-rng.lo, rng.hi)) * 1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_non_finite_values_are_refused(bad, axis):
    x = np.ones((300, 40), np.float32)
    x[123, 7] = bad
    with pytest.raises(NonFiniteWeightError, match="w1 holds NaN or infinite"):
        K.minmax(x, axis, name="w1")


def test_front_refuses_bad_arguments():
    x = np.ones((4, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        K.minmax(x.astype(np.float64))
    with pytest.raises(ValueError, match="empty"):
        K.minmax(np.ones((0, 3), np.float32))
    with pytest.raises(Exception, match="axis 2 is out of range"):
        K.minmax(x, 2)
    with pytest.raises(ValueError, match="expected 4 scale"):
        K.quantize(x, np.ones(3, np.float32), np.zeros(3, np.int32), 0, 255, 0)
    with pytest.raises(ValueError, match="finite and positive"):
        K.quantize(x, np.zeros(4, np.float32), np.zeros(4, np.int32), 0, 255, 0)
    with pytest.raises(Exception, match="not an 8-bit"):
        K.quantize(x, np.ones(4, np.float32), np.zeros(4, np.int32), -200, 255, 0)
    with pytest.raises(ValueError, match="cannot hold exactly"):
        K.unpack4(np.zeros(3, np.uint8), 9, signed=False)
    with pytest.raises(Exception, match="n_threads"):
        K.minmax(np.ones(1 << 19, np.float32), n_threads=0)


def test_non_contiguous_input_is_handled():
    x = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    rng_t = K.minmax(x.T, 0)
    rng_c = K.minmax(np.ascontiguousarray(x.T), 0)
    np.testing.assert_array_equal(rng_t.lo, rng_c.lo)


def test_build_reports_openmp_state():
    assert isinstance(K.openmp_enabled(), bool)
    assert K.default_threads() >= 1
    if not K.openmp_enabled():
        assert K.default_threads() == 1


@settings(max_examples=40, deadline=None)
@given(codes=hnp.arrays(np.int8, st.integers(1, 5000), elements=st.integers(-8, 7)))
def test_pack4_kernel_equals_numpy_helper_int4(codes):
    import ml_dtypes
    from onnx import numpy_helper

    assert K.pack4(codes, n_threads=2).tobytes() == numpy_helper.from_array(codes.astype(ml_dtypes.int4)).raw_data


@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("axis", [None, 0, 1])
@threads
def test_unaligned_input_from_a_mapped_file(offset, axis, threads):
    """Weights are read in place from ONNX files, where they need not be 4-byte aligned."""
    values = np.random.default_rng(offset).standard_normal(300 * 700).astype(np.float32)
    buffer = b"\0" * offset + values.tobytes()
    x = np.frombuffer(buffer, np.float32, count=values.size, offset=offset).reshape(300, 700)
    assert not x.flags.aligned
    check_all_kernels(x, axis, RANGES[2], threads)
