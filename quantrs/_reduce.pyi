import numpy as np

BLOCK_SIZE: int

def minmax(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_threads: int) -> bool: ...
