"""float16 and bfloat16 weights: the kernels read them in place and widen each value to float32
(csrc/_half.pxd). Their results must be the float32 kernels' on x.astype(np.float32), bit for
bit, and equal the numpy twins (which widen with astype), on 1 and 2 threads, in both layouts,
at any byte offset; and the widening itself must be exact for every one of the 65,536 bit
patterns of each format."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantrs import kernels as K
from quantrs import reference as R
from quantrs.errors import NonFiniteWeightError
from quantrs.tensor import as_float16

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALF = [F16, BF16]
half_dtypes = pytest.mark.parametrize("dtype", HALF, ids=["float16", "bfloat16"])
threads = pytest.mark.parametrize("threads", [1, 2], ids=["1thread", "2threads"])
RANGES = [(-127, 127, True), (-128, 127, False), (0, 255, False), (0, 15, False), (-8, 7, False)]


# Let the kernels use 2 threads on tiny arrays (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("parallel_even_when_tiny")


def all_patterns(dtype: np.dtype) -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)


def exponent_all_ones(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    mask = 0x7C00 if dtype == F16 else 0x7F80
    return (bits & mask) == mask


def finite_patterns(dtype: np.dtype) -> np.ndarray:
    x = all_patterns(dtype)
    return x[~exponent_all_ones(x.view(np.uint16), dtype)]


# Values drawn as bit patterns: every finite value of the format is as likely as any other, so
# subnormals, -0.0 and the largest magnitudes all come up. bfloat16 stops below 2**127: near
# float32's limit the twins' float32 dequantization (q - zero_point) * scale may overflow
# (with a warning, an error in this suite), while the kernels silently agree on inf.
def half_values(dtype: np.dtype):
    if dtype == F16:
        return st.integers(0, 0xFFFF).filter(lambda b: (b & 0x7C00) != 0x7C00)
    return st.integers(0, 0xFFFF).filter(lambda b: (b & 0x7F80) < 0x7F00)


def half_tensors(dtype: np.dtype, max_side: int = 9):
    shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=max_side)
    return hnp.arrays(np.uint16, shapes, elements=half_values(dtype)).map(lambda bits: bits.view(dtype))


def check_half_kernels(x: np.ndarray, axis, qrange, n_threads: int) -> None:
    """minmax, quantize, channel_error and quantize_with_error on a 16-bit x: equal to the twins,
    and byte for byte to the float32 kernels on the widened values."""
    qmin, qmax, symmetric = qrange
    signed = qmin < 0
    x32 = x.astype(np.float32)
    x3 = K.channel_view(x, axis)

    rng = K.minmax(x, axis, n_threads=n_threads)
    rng32 = K.minmax(x32, axis, n_threads=n_threads)
    assert (rng.lo.tobytes(), rng.hi.tobytes()) == (rng32.lo.tobytes(), rng32.hi.tobytes())
    lo, hi, bad = R.minmax(x3)
    assert not bad
    np.testing.assert_array_equal(rng.lo, lo)
    np.testing.assert_array_equal(rng.hi, hi)

    scale, zp = K.scales(rng, qmin, qmax, symmetric=symmetric)
    codes = K.quantize(x, scale, zp, qmin, qmax, axis, n_threads=n_threads)
    codes_ref = R.quantize(x3, scale, zp, qmin, qmax)
    np.testing.assert_array_equal(codes.reshape(x3.shape), codes_ref)
    assert codes.tobytes() == K.quantize(x32, scale, zp, qmin, qmax, axis, n_threads=n_threads).tobytes()

    sse, max_abs = K.channel_error(x, codes, scale, zp, axis, signed=signed, n_threads=n_threads)
    sse_ref, max_ref = R.channel_error(x3, codes_ref, signed, scale, zp)
    assert sse.tobytes() == sse_ref.tobytes()
    np.testing.assert_array_equal(max_abs, max_ref)
    sse32, max32 = K.channel_error(x32, codes, scale, zp, axis, signed=signed, n_threads=n_threads)
    assert (sse.tobytes(), max_abs.tobytes()) == (sse32.tobytes(), max32.tobytes())

    out = np.full(x.size, 0xAA, dtype=np.uint8)
    fused_codes, fused_sse, fused_max = K.quantize_with_error(x, scale, zp, qmin, qmax, axis, n_threads=n_threads, out=out)
    np.testing.assert_array_equal(fused_codes.reshape(x3.shape), codes_ref)
    assert fused_sse.tobytes() == sse_ref.tobytes()
    assert fused_max.tobytes() == max32.tobytes()


@settings(max_examples=150, deadline=None)
@given(data=st.data(), qrange=st.sampled_from(RANGES))
@half_dtypes
@threads
def test_half_kernels_equal_twins(data, qrange, dtype, threads):
    x = data.draw(half_tensors(dtype))
    axis = data.draw(st.sampled_from([None, *range(x.ndim)]))
    check_half_kernels(x, axis, qrange, threads)


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((3, 70_003), 0),  # runs longer than one parallel block, widened in chunks, odd tail
        ((2, 3, 9_001), 1),  # several error blocks (4,096) per run, outer > 1
        ((5, 9_000), 1),  # row layout wider than one column span (4,096)
        ((1_100, 5), 1),  # row layout: 16 row groups of 69 rows, the last one short
        ((130, 3), 1),  # row layout: groups of the minimum 64 rows
        ((140_001,), None),  # per-tensor across several blocks
        ((4, 6, 1, 1), 1),  # ConvTranspose-like short runs
    ],
)
@pytest.mark.parametrize("qrange", [RANGES[0], RANGES[2], RANGES[3]])
@half_dtypes
@threads
def test_half_kernels_equal_twins_across_blocks(shape, axis, qrange, dtype, threads):
    x = (np.random.default_rng(7).standard_normal(shape) * 3).astype(dtype)
    check_half_kernels(x, axis, qrange, threads)


@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("axis", [None, 0, 1])
@half_dtypes
@threads
def test_unaligned_half_input_from_a_mapped_file(offset, axis, dtype, threads):
    """A 16-bit weight may start at an odd byte offset inside an ONNX file."""
    values = np.random.default_rng(offset).standard_normal(300 * 700).astype(dtype)
    buffer = b"\0" * offset + values.tobytes()
    x = np.frombuffer(buffer, dtype, count=values.size, offset=offset).reshape(300, 700)
    assert x.flags.aligned == (offset % 2 == 0)  # float16/bfloat16 need 2-byte alignment
    check_half_kernels(x, axis, RANGES[2], threads)


@half_dtypes
def test_every_bit_pattern_widens_exactly_like_numpy(dtype):
    x = all_patterns(dtype)
    widened = K.to_float32(x).view(np.uint32)
    expected = x.astype(np.float32).view(np.uint32)  # numpy (float16) / ml_dtypes (bfloat16)
    nan = np.isnan(x.astype(np.float32))
    np.testing.assert_array_equal(widened[~nan], expected[~nan])  # zeros, subnormals, normals, inf
    # NaN: still NaN, same sign, payload kept but for the quiet bit (0x00400000): quieting a
    # signalling NaN is the one liberty a converter has, and F16C's vcvtph2ps takes it.
    bits = x.view(np.uint16).astype(np.uint32)
    assert nan.sum() == (2046 if dtype == F16 else 254)
    assert np.isnan(widened.view(np.float32)[nan]).all()
    payload = (bits & 0x3FF) << 13 if dtype == F16 else (bits & 0x7F) << 16
    kept = ((bits & 0x8000) << 16 | 0x7F800000 | payload)[nan]
    np.testing.assert_array_equal(widened[nan] | 0x00400000, kept | 0x00400000)
    np.testing.assert_array_equal(widened[nan] | 0x00400000, expected[nan] | 0x00400000)


def test_scales_narrow_to_float16_exactly_like_numpy():
    """as_float16 (the scales written as float16) moves bits where no value needs rounding and
    leaves the rest to numpy: the bytes are numpy's either way, in C order whatever the input's."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    normal = every[(every >= 2.0**-14) & np.isfinite(every)]  # every positive normal float16: the fast path
    assert normal.size == 30 * 1024 and normal.max() == 65504
    needs_rounding = normal.copy()
    needs_rounding[7] = np.float32(1 + 0.75 * 2.0**-10)  # numpy rounds it up; dropping bits would round it down
    rng = np.random.default_rng(5)
    cases = [
        normal,
        normal[::-1].copy(),
        normal.reshape(-1, 1024),  # a MatMulNBits scale [N, blocks]
        normal[::3],  # not contiguous
        normal.reshape(30, 1024).T,  # a MatMulNBits scale: [N, blocks], a view of the kernel's [blocks, N]
        needs_rounding,
        every,  # zeros, subnormals, negatives, infinities, NaNs
        normal * np.float32(2.0**-12),  # subnormal float16 values
        np.append(normal, np.float32(2.0**-15)),  # one subnormal
        np.append(normal, np.float32(65536)),  # one past float16's range (numpy: inf)
        np.append(normal, np.float32(np.inf)),
        np.append(normal, -normal[:3]),
        rng.random(5000, dtype=np.float32),
        np.zeros(0, np.float32),
        normal.astype(np.float64),
    ]
    for scale in cases:
        with np.errstate(over="ignore"):  # 65536 and float32 values past 65504: inf, as numpy warns
            got, numpys = as_float16(scale), scale.astype(np.float16)
        assert got.dtype == np.float16 and got.shape == scale.shape and got.flags.c_contiguous  # the writer's bytes
        assert got.tobytes() == numpys.tobytes()


@half_dtypes
@threads
def test_every_finite_pattern_through_the_kernels(dtype, threads):
    """All finite patterns (subnormals and -0.0 included) through minmax (each value its own
    channel: lo and hi are the value itself) and the fused quantize + error pass."""
    x = finite_patterns(dtype)
    expected = x.astype(np.float32)
    rng = K.minmax(x, 0, n_threads=threads)
    assert rng.lo.tobytes() == expected.tobytes()
    assert rng.hi.tobytes() == expected.tobytes()
    for axis in (None, 0):
        check_half_kernels(x, axis, RANGES[0], threads)
    check_half_kernels(x.reshape(-1, 256), 0, RANGES[2], threads)  # runs of 256 values per channel


@half_dtypes
def test_every_non_finite_pattern_is_refused(dtype):
    """Each float16 Inf/NaN pattern (exponent 31) and bfloat16 one (exponent 255) makes minmax
    refuse the tensor, wherever it sits, in both layouts."""
    bits = all_patterns(dtype).view(np.uint16)
    bad = bits[exponent_all_ones(bits, dtype)]
    assert bad.size == (2048 if dtype == F16 else 256)
    base = np.ones((7, 9), dtype=dtype).view(np.uint16)
    positions = [(0, 0), (3, 4), (6, 8)]
    for i, pattern in enumerate(bad):
        x = base.copy()
        x[positions[i % 3]] = pattern
        for axis in (None, 0, 1):
            with pytest.raises(NonFiniteWeightError):
                K.minmax(x.view(dtype), axis, name="w")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("axis", [None, 0, 1])
@half_dtypes
def test_non_finite_half_values_are_refused(bad, axis, dtype):
    x = np.ones((300, 40), dtype)
    x[123, 7] = bad
    with pytest.raises(NonFiniteWeightError, match="w1 holds NaN or infinite"):
        K.minmax(x, axis, name="w1")


def test_onnx_bfloat16_and_float16_tensors_are_accepted():
    """The numpy arrays onnx hands out for FLOAT16 / BFLOAT16 initializers go straight in."""
    from onnx import TensorProto, helper, numpy_helper

    assert helper.tensor_dtype_to_np_dtype(TensorProto.BFLOAT16) == BF16
    values = np.random.default_rng(5).standard_normal((64, 48)).astype(np.float32)
    for dtype in HALF:
        x = numpy_helper.to_array(numpy_helper.from_array(values.astype(dtype), "w"))
        assert x.dtype == dtype
        check_half_kernels(x, 1, RANGES[0], 2)


def test_front_still_refuses_other_dtypes():
    for dtype in (np.float64, np.int16, np.uint16, ml_dtypes.float8_e4m3fn):
        with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
            K.minmax(np.ones((4, 4), dtype))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        K.quantize(np.ones((4, 4), np.float64), np.ones(4, np.float32), np.zeros(4, np.int32), 0, 255, 0)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        K.minmax(np.ones((4, 4), np.dtype(">f2")))


@half_dtypes
def test_non_contiguous_half_input_is_handled(dtype):
    x = np.random.default_rng(0).standard_normal((64, 32)).astype(dtype)
    rng_t = K.minmax(x.T, 0)
    rng_c = K.minmax(np.ascontiguousarray(x.T), 0)
    assert rng_t.lo.tobytes() == rng_c.lo.tobytes()
