"""Quantize one weight tensor: range -> scale/zero point -> codes (-> packed 4-bit) -> error.

The numeric work happens in the compiled kernels (quantrs.kernels); this module only decides the
integer type and its range.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from onnx import TensorProto

from quantrs import kernels

if TYPE_CHECKING:
    from quantrs.gptq import Compensation

__all__ = ["Scheme", "QuantizedTensor", "Scratch", "scheme_for", "quantize_tensor", "half_scales", "as_float16"]


@dataclass(frozen=True)
class Scheme:
    """An integer encoding: bits, signedness, code range and how the codes are stored."""

    bits: int
    signed: bool
    symmetric: bool
    packed: bool  # 4-bit codes stored two per byte as ONNX INT4/UINT4

    @property
    def qmin(self) -> int:
        # Symmetric INT8 (and 7-bit) drops the most negative code so that +x and -x map alike
        # ([-127, 127]), as onnxruntime's quantizer does for its integer kernels. Symmetric INT4
        # keeps all 16 codes ([-8, 7], scale fitted to both sides), as onnxruntime's MatMulNBits
        # does: a 15-level grid loses 7% of the resolution 4 bits have.
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.symmetric and self.bits > 4 else 0)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def onnx_type(self) -> int:
        if self.packed:
            return TensorProto.INT4 if self.signed else TensorProto.UINT4
        return TensorProto.INT8 if self.signed else TensorProto.UINT8

    @property
    def min_opset(self) -> int:
        """The lowest ai.onnx opset whose DequantizeLinear accepts this storage type."""
        return 21 if self.packed else 10


def scheme_for(bits: int, *, symmetric: bool, native_int4: bool) -> Scheme:
    """Symmetric means signed codes with zero point 0; asymmetric means unsigned codes."""
    return Scheme(bits=bits, signed=symmetric, symmetric=symmetric, packed=bits == 4 and native_int4)


@dataclass(frozen=True)
class QuantizedTensor:
    """Codes and parameters of one quantized tensor, ready for DequantizeLinear."""

    shape: tuple[int, ...]
    scheme: Scheme
    axis: int | None
    data: np.ndarray  # uint8 bytes: one code per byte, or two per byte when scheme.packed
    scale: np.ndarray  # float32, shape (C,), (1,) per tensor, or the blocked shape (MatMulNBits: [N, blocks], a view)
    zero_point: (
        np.ndarray
    )  # int32, same shape as scale (MatMulNBits: the stored bytes, uint8, [N, ceil(blocks / 2)] packed for 4 bits)
    mse: float
    max_abs_error: float
    mse_minmax: float | None = None  # with a range search: the MSE plain min/max ranges gave


class Scratch:
    """Two reusable, page-aligned byte buffers for codes (and packed codes).

    Streaming quantization writes each tensor's codes out before quantizing the next, so the
    same memory can serve every tensor: fresh pages for every weight would cost a page fault per
    4 KiB (on these VMs first-touched memory runs at well under 1 GB/s).
    """

    def __init__(self) -> None:
        self._buffers: list[np.ndarray] = [np.empty(0, np.uint8), np.empty(0, np.uint8)]

    def get(self, slot: int, size: int) -> np.ndarray:
        if self._buffers[slot].size < size:
            self._buffers[slot] = np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=np.uint8)
        return self._buffers[slot][:size]


_HALF_TINY = np.float16(2.0**-24)  # the smallest positive float16 (subnormal)


def half_scales(scale: np.ndarray, zero_point: np.ndarray, lo: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Scales rounded up to float16 (never down: the range must still fit the codes), and the
    asymmetric zero points recomputed for them; per-channel arrays, so plain numpy."""
    half = scale.astype(np.float16)
    half = np.where(half.astype(np.float32) < scale, np.nextafter(half, np.float16(np.inf)), half)
    half = np.maximum(half, _HALF_TINY).astype(np.float32)
    if not scheme.symmetric:
        low = np.minimum(lo.astype(np.float64), 0.0)
        zero_point = np.clip(np.rint(scheme.qmin - low / half.astype(np.float64)), scheme.qmin, scheme.qmax).astype(np.int32)
    return half, zero_point


# float32 bit patterns of float16's smallest normal value (2**-14) and its largest (65504)
_HALF_NORMAL_BITS = (0x38800000, 0x477FE000)
# The exponent bias float32 has over float16, at float16's exponent bits, mod 2**16: the shifted
# bits are subtracted from in 16 bits (the 17th bit they may have goes with the rebias).
_HALF_REBIAS = np.uint16(((127 - 15) << 10) & 0xFFFF)
_BELOW_HALF_BITS = 0x1FFF  # the 13 low mantissa bits float32 has over float16


def as_float16(scale: np.ndarray) -> np.ndarray:
    """scale (float32, any strides) as a C-contiguous float16 array: numpy's
    astype(np.float16, order="C"), bit for bit, in 0.2-0.8x its time (least gain on a transposed
    view) when every value is a positive normal float16 value already (half_scale's scales: see
    half_scales).

    numpy converts float32 to float16 one value at a time in integer code that rounds; a value
    that needs no rounding is its float32 bits shifted, the exponent rebased. Three reductions
    (min, max and OR of the bit patterns) tell whether every value is one; otherwise numpy
    converts. The shift reads `scale` in any order and writes C order: a transposed view (a
    MatMulNBits scale) is copied into place by the same pass.
    """
    if scale.dtype != np.float32 or not scale.size:
        return scale.astype(np.float16, order="C")
    bits = scale.view(np.uint32)
    lowest, highest = _HALF_NORMAL_BITS
    if bits.min() < lowest or bits.max() > highest or np.bitwise_or.reduce(bits, axis=None) & _BELOW_HALF_BITS:
        return scale.astype(np.float16, order="C")
    half = np.empty(scale.shape, np.uint16)  # written in place: fresh pages are most of the cost
    np.right_shift(bits, 13, out=half, casting="unsafe")
    half -= _HALF_REBIAS
    return half.view(np.float16)


def _alphas(range: str) -> tuple[float, ...]:
    """The block kernel's grid for a range method: none, the min/max range refitted, or the
    search grid (see QuantizeConfig.range)."""
    return {"minmax": (), "refit": (1.0,), "search": kernels.SEARCH_ALPHAS}[range]


def _block_view(x: np.ndarray, axis: int | None, block_size: int | None) -> tuple[np.ndarray, int, int] | None:
    """(a view of x, its block axis, block size) for the block kernel: the blocks themselves, or
    for a range search per channel or per tensor one block per channel (the channel axis must
    be the first or the last; None otherwise: the search does not apply)."""
    if block_size is not None:
        assert axis is not None
        return x, axis, block_size
    if axis is None:
        return x.reshape(1, -1), 1, x.size
    axis %= x.ndim
    if axis == 0:
        return x.reshape(x.shape[0], -1), 1, x.size // x.shape[0]
    if axis == x.ndim - 1:
        return x.reshape(-1, x.shape[-1]), 0, x.size // x.shape[-1]
    return None


def _quantize_blocks(
    x: np.ndarray,
    view: tuple[np.ndarray, int, int],
    scheme: Scheme,
    axis: int | None,
    *,
    name: str,
    n_threads: int | None,
    scratch: Scratch | None,
    half_scale: bool,
    alphas: tuple[float, ...],
) -> QuantizedTensor:
    """quantize_tensor through the block kernel: `view` is _block_view's."""
    values, block_axis, block_size = view
    out = scratch.get(0, x.size) if scratch is not None else None
    blocks = kernels.quantize_blocks(
        values,
        block_axis,
        block_size,
        scheme.qmin,
        scheme.qmax,
        symmetric=scheme.symmetric,
        alphas=alphas,
        half_scale=half_scale,
        n_threads=n_threads,
        out=out,
        name=name,
    )
    codes = blocks.codes
    if scheme.packed:
        packed = scratch.get(1, (x.size + 1) // 2) if scratch is not None else None
        data = kernels.pack4(codes, n_threads=n_threads, out=packed)
    else:
        data = codes.reshape(-1)
    size = max(x.size, 1)
    return QuantizedTensor(
        shape=tuple(x.shape),
        scheme=scheme,
        axis=axis,
        data=data,
        scale=blocks.scale.reshape(-1),
        zero_point=blocks.zero_point.reshape(-1),
        mse=blocks.sse / size,
        max_abs_error=blocks.max_abs_error,
        mse_minmax=blocks.sse_minmax / size if alphas else None,
    )


def quantize_tensor(
    x: np.ndarray,
    scheme: Scheme,
    axis: int | None,
    *,
    name: str = "tensor",
    n_threads: int | None = None,
    scratch: Scratch | None = None,
    half_scale: bool = False,
    block_size: int | None = None,
    range: str = "minmax",
    compensation: Compensation | None = None,
) -> QuantizedTensor:
    """Quantize a float32, float16 or bfloat16 array with `scheme`: along `axis` (None: per
    tensor), or, with `block_size`, in blocks of that many values along `axis` (the reduction
    axis; ONNX's blocked layout). `range`: minmax; refit (the least-squares scale and zero
    point for the min/max codes); search (clipped ranges tried too, see
    kernels.quantize_blocks).

    With `scratch`, the returned `data` lives in the scratch buffers and is valid until the next
    call that uses them. With `half_scale`, the scales are float16 values (held as float32) so
    that a float16 DequantizeLinear reproduces exactly what the codes were computed with.
    With `compensation` (quantrs.gptq), the codes for those scales are error-compensated ones.
    """
    if compensation is not None:
        qt = quantize_tensor(
            x, scheme, axis, name=name, n_threads=n_threads, half_scale=half_scale, block_size=block_size, range=range
        )
        compensated, error, largest = compensation.codes(
            x, qt.scale, qt.zero_point, axis=axis, block_size=block_size, qmin=scheme.qmin, qmax=scheme.qmax
        )
        flat = compensated.reshape(-1)
        data = kernels.pack4(flat, n_threads=n_threads) if scheme.packed else flat
        return replace(qt, data=data, mse=error / max(x.size, 1), max_abs_error=largest, mse_minmax=None)
    if block_size is not None or range != "minmax":
        view = _block_view(x, axis, block_size)
        if view is not None:
            alphas = _alphas(range)
            return _quantize_blocks(
                x, view, scheme, axis, name=name, n_threads=n_threads, scratch=scratch, half_scale=half_scale, alphas=alphas
            )
    rng = kernels.minmax(x, axis, n_threads=n_threads, name=name)
    scale, zero_point = kernels.scales(rng, scheme.qmin, scheme.qmax, symmetric=scheme.symmetric)
    if half_scale:
        scale, zero_point = half_scales(scale, zero_point, rng.lo, scheme)
    out = scratch.get(0, x.size) if scratch is not None else None
    codes, sse, max_abs = kernels.quantize_with_error(
        x, scale, zero_point, scheme.qmin, scheme.qmax, axis, n_threads=n_threads, out=out
    )
    if scheme.packed:
        packed = scratch.get(1, (x.size + 1) // 2) if scratch is not None else None
        data = kernels.pack4(codes, n_threads=n_threads, out=packed)
    else:
        data = codes.reshape(-1)
    return QuantizedTensor(
        shape=tuple(x.shape),
        scheme=scheme,
        axis=axis,
        data=data,
        scale=scale,
        zero_point=zero_point,
        mse=float(sse.sum() / max(x.size, 1)),
        max_abs_error=float(max_abs.max()),
    )


def quantize_matmulnbits(
    x: np.ndarray,
    scheme: Scheme,
    block_size: int,
    *,
    range: str,
    half_scale: bool,
    name: str = "tensor",
    n_threads: int | None = None,
    compensation: Compensation | None = None,
    scratch: Scratch | None = None,
) -> QuantizedTensor:
    """A MatMul weight [K, N] in onnxruntime's com.microsoft.MatMulNBits layout.

    The codes are the block kernel's along K, written transposed ([N, K]), made unsigned (a
    signed code q is stored as q + 2**(bits-1), which is MatMulNBits' default zero point), each
    column padded to whole blocks and packed low nibble first for 4 bits: `data` is
    [N, blocks, block_size * bits / 8] bytes. `scale` is [N, blocks]: a transposed view of the
    kernel's [blocks, N] scales, not a copy (the writer converts it to the stored type and order
    in one pass, see as_float16); `zero_point` holds the zero points as stored, packed for 4 bits
    ([N, ceil(blocks * bits / 8)] bytes, uint8; written only for asymmetric codes).
    With `scratch`, `data` lives in its buffers until the next call (as quantize_tensor's).
    """
    k, n = x.shape
    alphas = _alphas(range)
    count = -(-k // block_size)
    # The usual case, unsigned 4-bit codes of whole blocks with nothing to redo afterwards: the
    # kernel packs them in its own pass, straight into MatMulNBits' bytes.
    fused = scheme.bits == 4 and not scheme.signed and count * block_size == k and block_size % 2 == 0 and compensation is None
    code_bytes = x.size // 2 if fused else x.size
    blocks = kernels.quantize_blocks(
        x, 0, block_size, scheme.qmin, scheme.qmax, symmetric=scheme.symmetric, alphas=alphas,
        half_scale=half_scale, transpose=True, pack=fused, transpose_params=False, n_threads=n_threads, name=name,
        out=scratch.get(1 if fused else 0, code_bytes) if scratch is not None else None,
    )  # fmt: skip
    # blocks.scale and blocks.zero_point: [blocks, N], the ONNX blocked order (seen transposed below)
    sse, max_abs, sse_minmax = blocks.sse, blocks.max_abs_error, (blocks.sse_minmax if alphas else None)
    if compensation is not None:  # the same scales, error-compensated codes (quantrs.gptq)
        compensated, sse, max_abs = compensation.codes(  # which reads the parameters in the ONNX blocked order
            x,
            blocks.scale.reshape(-1),
            blocks.zero_point.reshape(-1),
            axis=0,
            block_size=block_size,
            qmin=scheme.qmin,
            qmax=scheme.qmax,
        )
        blocks = replace(blocks, codes=np.ascontiguousarray(compensated.T))
        sse_minmax = None
    offset = np.uint8(1 << (scheme.bits - 1) if scheme.signed else 0)
    if fused:
        codes = blocks.codes
    elif count * block_size == k:  # the kernel's [N, K] codes are already whole blocks
        codes = blocks.codes  # a fresh array (the kernel's or the compensation's), ours to shift
        if offset:
            np.add(codes, offset, out=codes)  # a signed code's byte + 2**(bits-1) wraps to the unsigned code
    else:
        codes = np.full((n, count * block_size), offset, dtype=np.uint8)
        codes[:, :k] = blocks.codes + offset
    zero_points = _nbits_zero_points(blocks.zero_point, scheme.bits)
    if scheme.bits == 4:
        if not fused:
            packed = scratch.get(1, (codes.size + 1) // 2) if scratch is not None else None
            codes = kernels.pack4(codes, n_threads=n_threads, out=packed)  # rows of whole blocks: a byte never spans two columns
    size = max(x.size, 1)
    return QuantizedTensor(
        shape=tuple(x.shape),
        scheme=scheme,
        axis=0,
        data=np.ascontiguousarray(codes).reshape(-1),
        scale=blocks.scale.T,
        zero_point=zero_points,
        mse=sse / size,
        max_abs_error=max_abs,
        mse_minmax=sse_minmax / size if sse_minmax is not None else None,
    )


def _nbits_zero_points(zero_point: np.ndarray, bits: int) -> np.ndarray:
    """MatMulNBits' zero points from the kernel's ([blocks, N] int32): bytes [N, blocks], or
    for 4 bits packed two per byte along each column, low nibble first (kernels.pack4's order), a
    column of odd length padded with a 0.

    Cast to bytes and, for 4 bits, packed while still [blocks, N] (block 2j's and 2j+1's rows
    are contiguous: whole-row operations), then transposed: the one strided copy is of the
    packed bytes, an eighth of the int32 zero points' size.
    """
    as_bytes = zero_point.astype(np.uint8)  # [blocks, N]
    if bits != 4:
        return np.ascontiguousarray(as_bytes.T)
    count, n = as_bytes.shape
    if count % 2:
        as_bytes = np.concatenate([as_bytes, np.zeros((1, n), np.uint8)])
    as_bytes &= 0x0F  # the low nibble of each byte, as pack4 takes it
    packed = np.left_shift(as_bytes[1::2], 4)  # block 2j + 1's zero points: the high nibbles
    packed |= as_bytes[0::2]
    return np.ascontiguousarray(packed.T)
