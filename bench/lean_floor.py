"""The I/O floor of weight quantization: read the input once through a memory map and write
`out_bytes` once from a reused page-aligned buffer. Prints the seconds it took (excluding
interpreter start-up).

    python bench/lean_floor.py MODEL OUT OUT_BYTES
"""

import mmap
import os
import sys
import time

import numpy as np

CHUNK = 16 << 20


def main(src: str, dst: str, out_bytes: int) -> float:
    started = time.perf_counter()
    buffer = np.frombuffer(mmap.mmap(-1, CHUNK), dtype=np.uint8)  # anonymous maps are page aligned
    files = [src] + [
        os.path.join(os.path.dirname(src), f)
        for f in os.listdir(os.path.dirname(src) or ".")
        if f == os.path.basename(src) + ".data"
    ]
    total_in = sum(os.path.getsize(f) for f in files)
    ratio = out_bytes / total_in
    written = 0
    with open(dst, "wb") as out:
        for path in files:
            with open(path, "rb") as f:
                data = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
            for start in range(0, data.size, CHUNK):
                piece = data[start : start + CHUNK]
                np.copyto(buffer[: piece.size], piece)  # reads the input once
                n = min(int(round((start + piece.size) * ratio)) - written, CHUNK, out_bytes - written)
                if n > 0:
                    out.write(memoryview(buffer[:n]))
                    written += n
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"{main(sys.argv[1], sys.argv[2], int(sys.argv[3])):.4f}")
