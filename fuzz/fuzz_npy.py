#!/usr/bin/env python3
"""Fuzz target: the .npy sample reader (quantrs.samples: numpy's header, then _NpyRows reading
stacked samples a row at a time).

The first byte picks the model inputs the file is checked against (fuzz/harness.py, SPECS;
the single-input ones) and split_batch; the rest is written as work/data.npy and every sample
read. A clean refusal is a ConfigError (any QuantrsError); anything else is a finding.

    PYTHONPATH=<debug build>/src python fuzz/fuzz_npy.py -max_total_time=600 CORPUS SEEDS
(fuzz/run.py writes the seeds and passes the limits; README, "Fuzzing".)
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["quantrs", "numpy.lib._format_impl", "numpy.lib._npyio_impl"]):
    import numpy  # noqa: F401  (imported here for its .npy reader to be instrumented)

    from quantrs.samples import load_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

sandbox = harness.Sandbox()


def read(data: bytes) -> None:
    if not data:
        return
    specs, split_batch = harness.pick_specs(data[0], count=6)
    load_samples(sandbox.write("data.npy", data[1:]), specs, split_batch=split_batch)


if __name__ == "__main__":
    harness.main(harness.checked(read, sandbox, factor=64))
