"""Protobuf wire-format scanning over a memory-mapped ONNX file.

ONNX files are protobuf messages whose weights sit in length-delimited fields. Scanning the
field boundaries (without copying a payload) lets quantrs parse everything except the weights
with `onnx`, and read each weight as a view of the mapped file.
"""

def _bounds_checked():
    # Index one past the end of a view of the first of two bytes: with boundscheck on (the
    # QUANTRS_CYTHON_DEBUG=1 build, setup.py) that raises IndexError; without, it reads the
    # second byte, which is there. The directive as compiled, whatever C file it came from.
    cdef unsigned char[::1] view = bytearray(2)
    cdef Py_ssize_t one = 1
    view = view[:1]
    try:
        return view[one] < 0  # never true: a byte is unsigned
    except IndexError:
        return True


# True in the bounds-checked build; the fuzz targets (fuzz/) refuse to run against any other.
BOUNDS_CHECKED = _bounds_checked()


cdef inline Py_ssize_t _varint(const unsigned char* buf, Py_ssize_t pos, Py_ssize_t end,
                               unsigned long long* value) noexcept nogil:
    # Returns the position after the varint, or -1 if it runs past `end` or is over 10 bytes.
    cdef unsigned long long v = 0
    cdef int shift = 0
    cdef unsigned char b
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        v |= (<unsigned long long>(b & 0x7F)) << shift
        if not (b & 0x80):
            value[0] = v
            return pos
        shift += 7
    return -1


def scan_fields(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end):
    """The fields of the message held in buf[start:end].

    Returns a list of (field_number, wire_type, tag_start, value_start, value_end): the bytes
    buf[tag_start:value_end] are the whole field (tag included), buf[value_start:value_end] its
    value (a length-delimited field's payload, without its length prefix). Raises ValueError
    naming the offset when the bytes are not a well-formed message (truncated file, garbage).
    """
    cdef Py_ssize_t pos = start, tag_start, value_start, value_end
    cdef unsigned long long key, length
    cdef int wire
    cdef const unsigned char* data
    if start < 0 or end > buf.shape[0] or start > end:
        raise ValueError(f"message bounds [{start}, {end}) outside the buffer of {buf.shape[0]} bytes")
    if end == start:
        return []
    data = &buf[0]
    fields = []
    while pos < end:
        tag_start = pos
        pos = _varint(data, pos, end, &key)
        if pos < 0:
            raise ValueError(f"bad field tag at byte {tag_start}")
        wire = key & 7
        if key >> 3 == 0:
            raise ValueError(f"field number 0 at byte {tag_start}")
        if wire == 0:
            value_start = pos
            pos = _varint(data, pos, end, &length)
            if pos < 0:
                raise ValueError(f"bad varint at byte {value_start}")
            value_end = pos
        elif wire == 1 or wire == 5:
            value_start = pos
            value_end = pos + (8 if wire == 1 else 4)
        elif wire == 2:
            pos = _varint(data, pos, end, &length)
            if pos < 0:
                raise ValueError(f"bad length at byte {tag_start}")
            if length > <unsigned long long>(end - pos):
                raise ValueError(f"field at byte {tag_start} claims {length} bytes, only {end - pos} remain")
            value_start = pos
            value_end = pos + <Py_ssize_t>length
        else:
            raise ValueError(f"unsupported wire type {wire} at byte {tag_start}")
        if value_end > end:
            raise ValueError(f"field at byte {tag_start} runs past the end of its message")
        pos = value_end
        fields.append((<Py_ssize_t>(key >> 3), wire, tag_start, value_start, value_end))
    return fields
