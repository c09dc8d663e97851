"""4-bit pack/unpack in ONNX's order: two values per byte, the first in the low nibble.

An odd count leaves the last byte's high nibble zero (as onnx.numpy_helper does).
"""
from cython.parallel cimport prange

cdef enum:
    CHUNK = 65536  # output bytes per parallel task


def pack4(const unsigned char[::1] codes, unsigned char[::1] out, int n_threads):
    """out[j] = (codes[2j] & 0xF) | (codes[2j + 1] & 0xF) << 4; len(out) == ceil(n / 2)."""
    cdef Py_ssize_t n = codes.shape[0], half = n // 2
    cdef Py_ssize_t t, j, stop, ntasks = (half + CHUNK - 1) // CHUNK
    cdef const unsigned char* src
    cdef unsigned char* dst
    if n == 0:
        return
    src = &codes[0]
    dst = &out[0]
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads):
        stop = (t + 1) * CHUNK
        if stop > half:
            stop = half
        for j in range(t * CHUNK, stop):
            dst[j] = (src[2 * j] & 0x0F) | ((src[2 * j + 1] & 0x0F) << 4)
    if n % 2:
        dst[half] = src[n - 1] & 0x0F


def unpack4(const unsigned char[::1] packed, bint signed_codes, unsigned char[::1] out,
            int n_threads):
    """Inverse of pack4 into len(out) codes; signed codes are sign-extended (0xF -> -1 == 0xFF)."""
    cdef Py_ssize_t n = out.shape[0], half = n // 2
    cdef Py_ssize_t t, j, stop, ntasks = (half + CHUNK - 1) // CHUNK
    cdef unsigned char lo, hi, ext = 0xF0 if signed_codes else 0x00
    cdef const unsigned char* src
    cdef unsigned char* dst
    if n == 0:
        return
    src = &packed[0]
    dst = &out[0]
    for t in prange(ntasks, nogil=True, schedule="static", num_threads=n_threads):
        stop = (t + 1) * CHUNK
        if stop > half:
            stop = half
        for j in range(t * CHUNK, stop):
            lo = src[j] & 0x0F
            hi = src[j] >> 4
            # Sign-extend a nibble whose top bit is set: 0x8..0xF become 0xF8..0xFF.
            dst[2 * j] = lo | (ext if lo & 0x08 else 0)
            dst[2 * j + 1] = hi | (ext if hi & 0x08 else 0)
    if n % 2:
        lo = src[half] & 0x0F
        dst[n - 1] = lo | (ext if lo & 0x08 else 0)
