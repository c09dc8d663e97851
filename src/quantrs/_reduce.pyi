import numpy as np

BLOCK_SIZE: int
WEIGHT_FLOAT32: int
WEIGHT_FLOAT16: int
WEIGHT_BFLOAT16: int

# x: float32 (kind WEIGHT_FLOAT32) or the uint16 bit patterns of float16/bfloat16 values.
def minmax(x: np.ndarray, kind: int, lo: np.ndarray, hi: np.ndarray, n_threads: int) -> bool: ...
def to_float32(x: np.ndarray, kind: int, out: np.ndarray) -> None: ...
