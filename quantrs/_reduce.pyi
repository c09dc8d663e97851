import numpy as np

BLOCK_SIZE: int
COL_BLOCK: int

def minmax(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_threads: int) -> bool: ...
