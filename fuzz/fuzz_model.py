#!/usr/bin/env python3
"""Fuzz target: the model reader (quantrs.model.load_model, and reading every weight it finds).

The bytes are written as work/model.onnx beside weights.bin (external data the seeds name) and
loaded; then every stored tensor is read as load_model's callers read it (info, array,
file_range). A clean refusal is a ModelLoadError (any QuantrsError); anything else is a finding
(fuzz/harness.py). The compiled wire-format scanner (csrc/_wire.pyx) is also checked against a
Python model of it, field by field: the model is what gives the fuzzer coverage of the wire
format, which it cannot see inside the compiled scanner.

    PYTHONPATH=<debug build>/src python fuzz/fuzz_model.py -max_total_time=600 CORPUS SEEDS
(fuzz/run.py writes the seeds and passes the limits; README, "Fuzzing".)
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["quantrs", "onnx.numpy_helper", "onnx.helper"]):
    import numpy as np

    from quantrs._wire import scan_fields
    from quantrs.model import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

MASK64 = (1 << 64) - 1


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 70:
        b = buf[pos]
        pos += 1
        value = (value | ((b & 0x7F) << shift)) & MASK64
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def reference_scan(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """What scan_fields must return for buf[start:end] (ValueError where it must raise)."""
    fields = []
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = _varint(buf, pos, end)
        wire, number = key & 7, key >> 3
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value_start = pos
            _, pos = _varint(buf, pos, end)
            value_end = pos
        elif wire in (1, 5):
            value_start, value_end = pos, pos + (8 if wire == 1 else 4)
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise ValueError("length past the end")
            value_start, value_end = pos, pos + length
        else:
            raise ValueError("unsupported wire type")
        if value_end > end:
            raise ValueError("past the end")
        pos = value_end
        fields.append((number, wire, tag_start, value_start, value_end))
    return fields


def check_scanner(data: bytes, depth: int = 0, start: int = 0, end: int | None = None, budget: list[int] | None = None) -> None:
    """scan_fields agrees with reference_scan on the message and on its length-delimited fields
    (as nested messages, three levels deep: model > graph > initializer)."""
    end = len(data) if end is None else end
    budget = [64] if budget is None else budget
    buf = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8)
    try:
        expected = reference_scan(data, start, end)
    except ValueError:
        expected = None
    try:
        got = scan_fields(buf, start, end)
    except ValueError:
        got = None
    if got != expected:
        raise harness.Finding(f"scan_fields({start}, {end}) = {got}, the wire format says {expected}")
    for _, wire, _, value_start, value_end in expected or []:
        if wire == 2 and depth < 2 and budget[0] > 0:
            budget[0] -= 1
            check_scanner(data, depth + 1, value_start, value_end, budget)


sandbox = harness.Sandbox()
sandbox.write("weights.bin", np.arange(64, dtype=np.float32).tobytes())
_count = [0]


def read(data: bytes) -> None:
    check_scanner(data)
    _count[0] += 1
    path = sandbox.write("model.onnx", data)
    model = load_model(path)
    weights = model.weights
    for info in list(weights):
        weights.array(info.name)
        weights.file_range(info.name)


if __name__ == "__main__":
    harness.main(harness.checked(read, sandbox, factor=64))
