import numpy as np

ERR_BLOCK_VALUES: int
ROW_GROUP_MIN_ROWS: int
ROW_GROUPS_MAX_COUNT: int

def scales(
    lo: np.ndarray, hi: np.ndarray, qmin: int, qmax: int, symmetric: bool, scale: np.ndarray, zero_point: np.ndarray
) -> None: ...

# x and kind of the weight kernels: as _reduce.minmax.
def quantize(
    x: np.ndarray,
    kind: int,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, out: np.ndarray, n_threads: int) -> None: ...
def channel_error(
    x: np.ndarray,
    kind: int,
    q: np.ndarray,
    signed_codes: bool,
    scale: np.ndarray,
    zero_point: np.ndarray,
    sse: np.ndarray,
    max_abs: np.ndarray,
    n_threads: int,
) -> None: ...
def quantize_error(
    x: np.ndarray,
    kind: int,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    out: np.ndarray,
    sse: np.ndarray,
    max_abs: np.ndarray,
    n_threads: int,
) -> None: ...
