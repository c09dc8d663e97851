#!/usr/bin/env python3
"""Fuzz target: the .npz sample reader (quantrs.samples: numpy's zip archive of .npy members,
read a file at a time, then split into samples).

The first byte picks the model inputs the archive is checked against (fuzz/harness.py, SPECS)
and split_batch; the rest is written as work/data.npz and every sample read. A clean refusal
is a ConfigError (any QuantrsError); anything else is a finding. The memory bound allows for
deflate (at most 1032 bytes out per byte in): an archive holds what it decompresses to.

    PYTHONPATH=<debug build>/src python fuzz/fuzz_npz.py -max_total_time=600 CORPUS SEEDS
(fuzz/run.py writes the seeds and passes the limits; README, "Fuzzing".)
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["quantrs", "zipfile", "numpy.lib._format_impl", "numpy.lib._npyio_impl"]):
    import zipfile  # noqa: F401  (imported here to be instrumented)

    import numpy  # noqa: F401

    from quantrs.samples import load_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

sandbox = harness.Sandbox()


def read(data: bytes) -> None:
    if not data:
        return
    specs, split_batch = harness.pick_specs(data[0])
    load_samples(sandbox.write("data.npz", data[1:]), specs, split_batch=split_batch)


if __name__ == "__main__":
    harness.main(harness.checked(read, sandbox, factor=1100))
