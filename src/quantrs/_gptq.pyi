import numpy as np

# w: [b, N] float64 (updated in place); u: [b, b] float64; scale: [G, N] float32;
# zero_point: [G, N] int32; group: [b] int32; codes: [b, N] uint8; err: [b, N] float64.
def compensate_rows(
    w: np.ndarray,
    u: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    group: np.ndarray,
    qmin: int,
    qmax: int,
    codes: np.ndarray,
    err: np.ndarray,
    n_threads: int,
) -> None: ...
