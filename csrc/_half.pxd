# Half-precision weights: float16 and bfloat16 read in place and widened to float32 inside the
# kernels, a row segment or block at a time (never a float32 copy of the tensor).
#
# Every weight kernel is written once, on the fused pointer type `weight_p`: Cython emits one C
# version per input type. A loop body reads float32 through widened(x, n, buf): for float32
# input that is x itself (the float32 code is unchanged), for 16-bit input the n values are
# widened into buf, a small stack buffer that stays in L1 (the widening loop vectorises; reading
# through ld() inside the loop bodies did not, e.g. the four-lane min/max and error sums ran
# 2.5-3x slower on float16). Both conversions are exact (float16 and bfloat16 are subsets of
# float32) and the same loop bodies then run on the same float32 values, so every result is
# the float32 kernel's on x.astype(float32), bit for bit.
#
# The 16-bit storage types are one-member structs (distinct C types, so the fused type can tell
# float16 from bfloat16) with alignment 1, like float_u in _restrict.pxd: a tensor's bytes
# inside a memory-mapped ONNX file may start at any byte offset.
from _restrict cimport const_float_up, float_rp

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    typedef struct { uint16_t bits; } quantrs_f16;
    typedef struct { uint16_t bits; } quantrs_bf16;
    #if defined(__GNUC__) || defined(__clang__)
    typedef quantrs_f16 quantrs_f16_u __attribute__((aligned(1)));
    typedef quantrs_bf16 quantrs_bf16_u __attribute__((aligned(1)));
    #else
    typedef quantrs_f16 quantrs_f16_u;
    typedef quantrs_bf16 quantrs_bf16_u;
    #endif

    static inline float quantrs_bits_f32(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
    static inline uint32_t quantrs_f32_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

    /* bfloat16 is the top half of a float32. */
    static inline float quantrs_bf16_to_f32(uint16_t h) {
        return quantrs_bits_f32((uint32_t)h << 16);
    }

    /* float16 -> float32, exact for every bit pattern (NaN payloads kept) and branch-free, so
       that gcc -O3 vectorises it on baseline x86-64 (SSE2, no F16C). The 15 exponent and
       mantissa bits move to float32's places and the exponent is rebiased (+112); Inf/NaN
       (exponent 31) get exponent 255. Zeros and subnormals (exponent 0, mantissa m) are built
       as 2^-14 * (1 + m/1024), then 2^-14 is subtracted: m * 2^-24 exactly (Sterbenz). That
       uses normal operands only, so it stays exact when denormals-are-zero is set in MXCSR,
       where the common multiply-by-2^112 variant would read a float32 denormal as 0. */
    static inline float quantrs_f16_to_f32(uint16_t h) {
        uint32_t em = (uint32_t)(h & 0x7fffu) << 13;
        uint32_t exp = em & 0x0f800000u;
        uint32_t inf_nan = 0u - (uint32_t)(exp == 0x0f800000u);
        uint32_t small = 0u - (uint32_t)(exp == 0u);
        uint32_t u = em + (112u << 23) + (inf_nan & (112u << 23)) + (small & (1u << 23));
        uint32_t renormalised = quantrs_f32_bits(quantrs_bits_f32(u) - 6.103515625e-05f);
        u = (renormalised & small) | (u & ~small);
        return quantrs_bits_f32(u | ((uint32_t)(h & 0x8000u) << 16));
    }

    /* n float16 values (their bit patterns, at any byte alignment) -> float32. */
    #if defined(__F16C__)
    #include <immintrin.h>
    static inline void quantrs_widen_f16(const void* src, Py_ssize_t n, float* out) {
        const unsigned char* p = (const unsigned char*)src;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 2 * i))));
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = quantrs_f16_to_f32(h);
        }
    }
    #else
    static inline void quantrs_widen_f16(const void* src, Py_ssize_t n, float* out) {
        const unsigned char* p = (const unsigned char*)src;
        for (Py_ssize_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = quantrs_f16_to_f32(h);
        }
    }
    #endif
    """
    ctypedef struct f16_u "quantrs_f16_u":
        unsigned short bits
    ctypedef struct bf16_u "quantrs_bf16_u":
        unsigned short bits
    ctypedef const f16_u* const_f16_up "const quantrs_f16_u * __restrict__"
    ctypedef const bf16_u* const_bf16_up "const quantrs_bf16_u * __restrict__"
    float f16_to_f32 "quantrs_f16_to_f32"(unsigned short h) noexcept nogil
    float bf16_to_f32 "quantrs_bf16_to_f32"(unsigned short h) noexcept nogil
    void widen_f16 "quantrs_widen_f16"(const void* src, Py_ssize_t n, float* out) noexcept nogil

# What the Python level hands over: float32 values, or the raw 16-bit patterns (a uint16 view)
# of float16 or bfloat16 values.
cdef enum WeightKind:
    KIND_FLOAT32 = 0
    KIND_FLOAT16 = 1
    KIND_BFLOAT16 = 2

ctypedef fused weight_p:
    const_float_up
    const_f16_up
    const_bf16_up


cdef enum:
    WIDEN_CHUNK = 4096  # values widened at a time by loops longer than a buffer (a multiple of 4)


cdef inline float ld(weight_p x, Py_ssize_t i) noexcept nogil:
    # Value i of x as float32 (the branches are resolved at compile time, per input type).
    if weight_p is const_f16_up:
        return f16_to_f32(x[i].bits)
    elif weight_p is const_bf16_up:
        return bf16_to_f32(x[i].bits)
    else:
        return x[i]


cdef inline void widen(weight_p x, Py_ssize_t n, float_rp out) noexcept nogil:
    cdef Py_ssize_t i
    if weight_p is const_f16_up:
        widen_f16(<const void*>x, n, out)
    else:
        for i in range(n):
            out[i] = ld(x, i)


cdef inline const_float_up widened(weight_p x, Py_ssize_t n, float* buf) noexcept nogil:
    # The first n values of x as float32: x itself for float32 input, else widened into buf
    # (which holds at least n floats).
    if weight_p is const_float_up:
        return x
    else:
        widen(x, n, buf)
        return buf


cdef inline Py_ssize_t chunk(weight_p x, Py_ssize_t n) noexcept nogil:
    # How many of the n values a loop longer than a buffer takes next: all of them for float32
    # input, at most WIDEN_CHUNK for 16-bit input (see widened()).
    if weight_p is const_float_up:
        return n
    else:
        return n if n < WIDEN_CHUNK else WIDEN_CHUNK


cdef struct Weights:
    # A weight tensor's buffer as the kernels see it: (outer, C, inner), C-contiguous.
    const void* data
    Py_ssize_t outer, C, inner
    WeightKind kind


cdef inline object weight_view(x, int kind, Weights* w):
    # Acquire x (float32 values, or the uint16 bit patterns of float16/bfloat16 ones) as a
    # C-contiguous 3-D buffer and describe it in w. Returns the memoryview: the caller keeps it
    # while w.data is in use.
    cdef const float[:, :, ::1] xf
    cdef const unsigned short[:, :, ::1] xh
    if kind == KIND_FLOAT32:
        xf = x
        w.data = &xf[0, 0, 0]
        w.outer, w.C, w.inner = xf.shape[0], xf.shape[1], xf.shape[2]
        w.kind = KIND_FLOAT32
        return xf
    if kind != KIND_FLOAT16 and kind != KIND_BFLOAT16:
        raise ValueError(f"unknown weight kind {kind}")
    xh = x
    w.data = &xh[0, 0, 0]
    w.outer, w.C, w.inner = xh.shape[0], xh.shape[1], xh.shape[2]
    w.kind = <WeightKind>kind
    return xh
