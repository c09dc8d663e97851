#!/usr/bin/env python3
"""Fuzz target: the .pb sample reader (quantrs.samples: an onnxruntime test_data_set folder's
input_K.pb, a serialized onnx TensorProto, maybe with external data).

The first byte picks the model inputs (fuzz/harness.py, SPECS) and split_batch; the rest is
written as work/input_0.pb, in a set folder holding data.bin (external data the seeds name)
and a valid input_K.pb for each further input; the folder is read as one test data set. A
clean refusal is a ConfigError (any QuantrsError); anything else is a finding, and so is
opening ../secret.bin (through "..", an absolute path or the symbolic link link.bin).

    PYTHONPATH=<debug build>/src python fuzz/fuzz_pb.py -max_total_time=600 CORPUS SEEDS
(fuzz/run.py writes the seeds and passes the limits; README, "Fuzzing".)
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["quantrs", "onnx.numpy_helper", "onnx.external_data_helper", "onnx.helper"]):
    import numpy as np
    from onnx import numpy_helper

    from quantrs.samples import load_samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

sandbox = harness.Sandbox()
sandbox.write("data.bin", np.arange(64, dtype=np.float32).tobytes())


def _valid(spec: harness.InputSpec) -> bytes:
    shape = tuple(d if isinstance(d, int) and d > 0 else 2 for d in spec.shape)
    return numpy_helper.from_array(np.ones(shape, spec.dtype), spec.name).SerializeToString()


COMPANIONS = {id(specs): [_valid(s) for s in specs[1:]] for specs in harness.SPECS}


def read(data: bytes) -> None:
    if not data:
        return
    specs, split_batch = harness.pick_specs(data[0])
    for stale in sandbox.work.glob("input_*.pb"):
        stale.unlink()
    sandbox.write("input_0.pb", data[1:])
    for k, companion in enumerate(COMPANIONS[id(specs)], start=1):
        sandbox.write(f"input_{k}.pb", companion)
    load_samples(sandbox.work, specs, split_batch=split_batch)


if __name__ == "__main__":
    harness.main(harness.checked(read, sandbox, factor=64))
