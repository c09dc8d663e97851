import numpy as np

BOUNDS_CHECKED: bool

def scan_fields(buf: np.ndarray, start: int, end: int) -> list[tuple[int, int, int, int, int]]: ...
