"""Each compiled kernel beside its numpy twin (quantrs.reference) in one benchmark group, so the
table shows the ratio measured in the same run. `copyto` rows give the memory-bandwidth
ceiling of this machine in the same run.

    pytest bench --benchmark-only --benchmark-json=bench/kernels.json
    python bench/summarize.py bench/kernels.json
"""

from __future__ import annotations

import numpy as np
import pytest

from quantrs import kernels as K
from quantrs import reference as R

INT8 = (0, 255, False)  # asymmetric UINT8, the default


def numpy_per_channel_int8(x: np.ndarray, axis: int) -> np.ndarray:
    x3 = K.channel_view(x, axis)
    lo, hi, _ = R.minmax(x3)
    scale, zp = R.scales(lo, hi, *INT8)
    return R.quantize(x3, scale, zp, INT8[0], INT8[1])


def quantrs_per_channel_int8(x: np.ndarray, axis: int, n_threads: int) -> np.ndarray:
    rng = K.minmax(x, axis, n_threads=n_threads)
    scale, zp = K.scales(rng, INT8[0], INT8[1], symmetric=False)
    return K.quantize(x, scale, zp, INT8[0], INT8[1], axis, n_threads=n_threads)


SHAPE_NAMES = ["matmul-4096x4096", "conv-256x256x3x3", "matmul-10000x10000"]


@pytest.mark.parametrize("shape", SHAPE_NAMES)
@pytest.mark.parametrize("impl", ["copyto", "numpy", "quantrs-1t", "quantrs-2t"])
def test_quantize_int8_per_channel(benchmark, weights, shape, impl):
    """min/max + scales + codes: the whole per-channel INT8 quantization of one weight."""
    x, axis = weights(shape)
    benchmark.group = f"quantize-int8-per-channel {shape}"
    benchmark.extra_info["bytes"] = x.nbytes
    if impl == "copyto":
        out = np.empty_like(x)
        benchmark(np.copyto, out, x)
    elif impl == "numpy":
        benchmark.pedantic(numpy_per_channel_int8, (x, axis), rounds=3, iterations=1)
    else:
        benchmark(quantrs_per_channel_int8, x, axis, 1 if impl == "quantrs-1t" else 2)


@pytest.mark.parametrize("impl", ["numpy", "quantrs-1t", "quantrs-2t"])
def test_minmax(benchmark, weights, impl):
    x, axis = weights("matmul-4096x4096")
    benchmark.group = "minmax matmul-4096x4096"
    benchmark.extra_info["bytes"] = x.nbytes
    if impl == "numpy":
        benchmark(R.minmax, K.channel_view(x, axis))
    else:
        benchmark(K.minmax, x, axis, n_threads=1 if impl == "quantrs-1t" else 2)


def at_byte_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of x whose data starts `offset` bytes past a page boundary, as a tensor's bytes
    do inside a memory-mapped ONNX file (protobuf puts them anywhere)."""
    buf = np.empty(x.nbytes + 2 * 4096, dtype=np.uint8)
    start = -buf.ctypes.data % 4096 + offset
    out = np.ndarray(x.shape, dtype=x.dtype, buffer=buf, offset=start)
    out[...] = x
    return out


@pytest.mark.parametrize("offset", [0, 4, 8, 1])
def test_quantize_with_error_input_offset(benchmark, weights, offset):
    """The fused quantize + error pass of the pipeline, 2 threads, on input that starts 0, 4, 8
    or 1 bytes past a 16-byte boundary: the speed must not depend on where the bytes start."""
    x, axis = weights("matmul-4096x4096")
    rng = K.minmax(x, axis)
    scale, zp = K.scales(rng, 0, 15, symmetric=False)
    xo = at_byte_offset(x, offset)
    out = np.empty(x.shape, dtype=np.uint8)
    benchmark.group = "quantize+error int4 matmul-4096x4096, input offset"
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark(K.quantize_with_error, xo, scale, zp, 0, 15, axis, n_threads=2, out=out)


@pytest.fixture(scope="module")
def half_weights(weights):
    """The matmul-4096x4096 values as float32, float16 and bfloat16 (2^24 values each)."""
    import ml_dtypes

    x, _ = weights("matmul-4096x4096")
    return {"float32": x, "float16": x.astype(np.float16), "bfloat16": x.astype(ml_dtypes.bfloat16)}


# The same 2^24 values in the two loop shapes: MatMul (channel = last axis: the row layout) and
# Conv (channel = axis 0: 1024 contiguous runs of 16,384 values).
DTYPE_LAYOUTS = {"matmul-4096x4096": ((4096, 4096), 1), "conv-1024x1024x4x4": ((1024, 1024, 4, 4), 0)}


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("layout", list(DTYPE_LAYOUTS))
@pytest.mark.parametrize("impl", ["float32", "float16", "bfloat16"])
def test_quantize_with_error_by_dtype(benchmark, half_weights, layout, n_threads, impl):
    """The fused quantize + error pass (per-channel INT8) on float32, float16 and bfloat16 input
    of the same 2^24 values: 16-bit weights are widened inside the kernel (csrc/_half.pxd); the
    bar is float16 <= 1.5x float32's time."""
    shape, axis = DTYPE_LAYOUTS[layout]
    x = half_weights[impl].reshape(shape)
    rng = K.minmax(x, axis)
    scale, zp = K.scales(rng, INT8[0], INT8[1], symmetric=INT8[2])
    out = np.empty(x.shape, dtype=np.uint8)
    benchmark.group = f"quantize+error int8 {layout}, {n_threads} thread(s), by input dtype"
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.extra_info["values"] = x.size
    benchmark(K.quantize_with_error, x, scale, zp, INT8[0], INT8[1], axis, n_threads=n_threads, out=out)


@pytest.fixture(scope="module")
def codes_case(weights):
    x, axis = weights("conv-256x256x3x3")
    rng = K.minmax(x, axis)
    scale, zp = K.scales(rng, 0, 15, symmetric=False)
    codes = K.quantize(x, scale, zp, 0, 15, axis)
    return x, axis, scale, zp, codes


@pytest.mark.parametrize("impl", ["numpy", "quantrs-1t", "quantrs-2t"])
def test_channel_error(benchmark, codes_case, impl):
    x, axis, scale, zp, codes = codes_case
    benchmark.group = "channel-error conv-256x256x3x3"
    benchmark.extra_info["bytes"] = x.nbytes
    if impl == "numpy":
        benchmark(R.channel_error, K.channel_view(x, axis), K.channel_view(codes, axis), False, scale, zp)
    else:
        benchmark(K.channel_error, x, codes, scale, zp, axis, signed=False, n_threads=1 if impl == "quantrs-1t" else 2)


@pytest.mark.parametrize("impl", ["numpy", "quantrs-1t", "quantrs-2t"])
def test_pack4(benchmark, codes_case, impl):
    codes = codes_case[4].reshape(-1)
    benchmark.group = "pack4 conv-256x256x3x3"
    benchmark.extra_info["bytes"] = codes.nbytes
    if impl == "numpy":
        benchmark(R.pack4, codes)
    else:
        benchmark(K.pack4, codes, n_threads=1 if impl == "quantrs-1t" else 2)


@pytest.mark.parametrize("impl", ["numpy", "quantrs-1t", "quantrs-2t"])
def test_unpack4(benchmark, codes_case, impl):
    codes = codes_case[4].reshape(-1)
    packed = K.pack4(codes)
    benchmark.group = "unpack4 conv-256x256x3x3"
    benchmark.extra_info["bytes"] = codes.nbytes
    if impl == "numpy":
        benchmark(R.unpack4, packed, codes.size, False)
    else:
        benchmark(K.unpack4, packed, codes.size, signed=False, n_threads=1 if impl == "quantrs-1t" else 2)


@pytest.mark.parametrize("elements", [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_thread_threshold(benchmark, force_threads, elements, n_threads):
    """Where do 2 threads start to pay? Sets kernels.PARALLEL_MIN_ELEMENTS."""
    # A MatMul-like [K, 1024] weight. Up to 2^16 values it is one row group (>= 64 rows,
    # csrc/_rows.pxd), so a second thread has nothing to take; from 2^18 on it has several.
    x = np.random.default_rng(0).standard_normal((elements // 1024, 1024), dtype=np.float32)
    benchmark.group = f"threads {elements} elements"
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark(quantrs_per_channel_int8, x, 1, n_threads)


# Block-wise INT4 (csrc/_block.pyx: min/max, scale, codes and error in one pass per block) beside
# the per-channel fused pass on the same tensor. MatMul [K, N] is blocked along K (axis 0, the
# strided layout; its per-channel axis is N), Gemm transB=1 [N, K] along K (axis 1, contiguous
# blocks; per channel along N). "per-channel" is quantize_with_error alone (scales given);
# "per-channel-all" adds the min/max pass and scales() it needs, the whole per-channel job.
BLOCK_LAYOUTS = {"matmul-4096x4096-axis0": (0, 1), "gemm-4096x4096-axis1": (1, 0)}


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("layout", list(BLOCK_LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("impl", ["per-channel", "per-channel-all", "blocks", "blocks-refit", "blocks-search"])
def test_quantize_blocks(benchmark, half_weights, impl, dtype, layout, n_threads):
    """Block size 32, UINT4 asymmetric; the bars: blocks at per-channel's GB/s, search <= 1.5x
    blocks (MatMul, float32, 2 threads). blocks-refit: the 4-bit default (alphas=(1.0,))."""
    x = half_weights[dtype]
    axis, channel_axis = BLOCK_LAYOUTS[layout]
    out = np.empty(x.size, dtype=np.uint8)
    benchmark.group = f"blocks int4 b32 {layout}, {n_threads} thread(s)"
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.extra_info["values"] = x.size
    name = f"{impl} {dtype}"
    benchmark.extra_info["impl"] = name
    if impl == "per-channel":
        scale, zp = K.scales(K.minmax(x, channel_axis), 0, 15, symmetric=False)
        benchmark(K.quantize_with_error, x, scale, zp, 0, 15, channel_axis, n_threads=n_threads, out=out)
    elif impl == "per-channel-all":

        def per_channel_all():
            scale, zp = K.scales(K.minmax(x, channel_axis, n_threads=n_threads), 0, 15, symmetric=False)
            return K.quantize_with_error(x, scale, zp, 0, 15, channel_axis, n_threads=n_threads, out=out)

        benchmark(per_channel_all)
    else:
        alphas = {"blocks": None, "blocks-refit": (1.0,), "blocks-search": K.SEARCH_ALPHAS}[impl]
        benchmark(K.quantize_blocks, x, axis, 32, 0, 15, symmetric=False, alphas=alphas, n_threads=n_threads, out=out)


@pytest.mark.parametrize("grid", [0, 1, 2, 3, 6, 11])
def test_quantize_blocks_search_grid(benchmark, weights, grid):
    """The search's cost by grid size (1.0, 0.95, ... down by 0.05, `grid` points; 0: no search;
    kernels.SEARCH_ALPHAS is the first 3), MatMul [4096, 4096] along axis 0, block 32, UINT4,
    2 threads."""
    x, _ = weights("matmul-4096x4096")
    out = np.empty(x.size, dtype=np.uint8)
    benchmark.group = "blocks int4 b32 matmul-4096x4096-axis0, 2 threads, search grid size"
    benchmark.extra_info["bytes"] = x.nbytes
    benchmark.extra_info["impl"] = f"{grid} point(s)"
    alphas = tuple(float(np.float32(1.0 - 0.05 * k)) for k in range(grid)) or None
    benchmark(K.quantize_blocks, x, 0, 32, 0, 15, symmetric=False, alphas=alphas, n_threads=2, out=out)


@pytest.fixture(scope="module")
def gptq_batch():
    """One GPTQ batch of a [4096, 4096] weight: 128 rows, their factor block, blocks of 32."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((128, 4096))
    a = rng.standard_normal((512, 128))
    u = np.linalg.cholesky(np.linalg.inv(a.T @ a / 512 + 0.1 * np.eye(128))).T
    scale = rng.uniform(0.05, 0.2, (4, 4096)).astype(np.float32)
    zero_point = rng.integers(0, 16, (4, 4096)).astype(np.int32)
    group = (np.arange(128) // 32).astype(np.int32)
    return w, u, scale, zero_point, group


@pytest.mark.parametrize("impl", ["numpy", "quantrs-1t", "quantrs-2t"])
def test_compensate_rows(benchmark, gptq_batch, impl):
    """GPTQ's in-batch rows (kernels.compensate_rows) against its numpy twin, UINT4."""
    w, u, scale, zero_point, group = gptq_batch
    benchmark.group = "gptq rows: batch of 128 x 4096"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["bytes"] = w.nbytes
    if impl == "numpy":
        benchmark(R.compensate_rows, w, u, scale, zero_point, group, 0, 15)
    else:
        threads = 1 if impl == "quantrs-1t" else 2
        benchmark(lambda: K.compensate_rows(w.copy(), u, scale, zero_point, group, 0, 15, n_threads=threads))


@pytest.mark.parametrize("impl", ["nearest", "gptq"])
def test_gptq_weight(benchmark, weights, impl):
    """A [4096, 4096] MatMul weight in 4-bit blocks of 32 (refit), rounded to nearest or
    compensated (its factor computed once per activation, outside the timing, as quantize does)."""
    from quantrs import gptq
    from quantrs.tensor import quantize_tensor, scheme_for

    x, _ = weights("matmul-4096x4096")
    scheme = scheme_for(4, symmetric=False, native_int4=True)
    benchmark.group = "gptq weight: matmul 4096x4096, int4 b32"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["bytes"] = x.nbytes
    compensation = None
    if impl == "gptq":
        acts = np.random.default_rng(1).standard_normal((8192, 4096), dtype=np.float32)
        compensation = gptq.Compensation(gptq.factor(acts.T.astype(np.float64) @ acts / 8192), False)
    benchmark.pedantic(
        quantize_tensor,
        args=(x, scheme, 0),
        kwargs=dict(block_size=32, range="refit", compensation=compensation),
        rounds=3,
        iterations=1,
    )
