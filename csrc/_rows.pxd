# Work split of the row layout (inner == 1: MatMul/Gemm weights along their last axis), shared by
# the min/max, quantize and error kernels.
#
# A task is a group of consecutive rows times a span of up to ROW_SPAN columns, walked row by
# row: long sequential runs through memory. (Narrow column strips walked down every row, the
# earlier split, ran 1.5-2.5x slower on real files: short strided runs, and a cliff when the
# tensor's bytes start 4 or 8 bytes past a 16-byte boundary, as they do inside ONNX files.)
#
# Rows per group depend on the row count only, never on the thread count: the error kernels sum
# each group separately and then the groups in order, so that order must not move with threads.
cdef enum:
    ROW_SPAN = 4096        # columns per task (16 KiB of float32 row)
    ROW_GROUP_MIN = 64     # fewest rows per group: per-group partials cost C values per group
    ROW_GROUPS_MAX = 16    # most groups per tensor: enough to share among threads


cdef struct RowTile:
    Py_ssize_t group, r0, r1, c0, c1


cdef inline Py_ssize_t row_group(Py_ssize_t outer) noexcept nogil:
    cdef Py_ssize_t rows = (outer + ROW_GROUPS_MAX - 1) // ROW_GROUPS_MAX
    return rows if rows > ROW_GROUP_MIN else ROW_GROUP_MIN


cdef inline Py_ssize_t row_groups(Py_ssize_t outer) noexcept nogil:
    cdef Py_ssize_t rows = row_group(outer)
    return (outer + rows - 1) // rows


cdef inline Py_ssize_t row_spans(Py_ssize_t C) noexcept nogil:
    return (C + ROW_SPAN - 1) // ROW_SPAN


cdef inline RowTile row_tile(Py_ssize_t t, Py_ssize_t outer, Py_ssize_t C) noexcept nogil:
    # Task t of row_groups(outer) * row_spans(C): tasks of one group are adjacent.
    cdef RowTile tile
    cdef Py_ssize_t rows = row_group(outer), spans = row_spans(C)
    tile.group = t // spans
    tile.r0 = tile.group * rows
    tile.r1 = tile.r0 + rows if tile.r0 + rows < outer else outer
    tile.c0 = (t - tile.group * spans) * ROW_SPAN
    tile.c1 = tile.c0 + ROW_SPAN if tile.c0 + ROW_SPAN < C else C
    return tile
