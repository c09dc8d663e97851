import numpy as np

LANES: int
CHUNK_VALUES_COUNT: int
MIN_SPAN_COLUMNS: int
MAX_SPAN_COLUMNS: int
TRANSPOSED_SPAN_COLUMNS: int

# x and kind as _reduce.minmax; x viewed as (outer, L, inner). Returns True on NaN/Inf in x.
def quantize_blocks(
    x: np.ndarray,
    kind: int,
    block_size: int,
    qmin: int,
    qmax: int,
    symmetric: bool,
    alphas: np.ndarray,
    half_scale: bool,
    transpose: bool,
    pack: bool,
    out: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    totals: np.ndarray,
    n_threads: int,
) -> bool: ...
