"""bench/cnn_static.py, once, small: it builds its CNNs, quantizes them with every tool, times
them and prints its tables; quantrs' static outputs run on onnxruntime's integer kernels with
no float Conv or Gemm left. (No timing is asserted.)

    pytest bench/test_cnn_static.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnn_static  # noqa: E402


def test_cnn_static_prints_its_tables(tmp_path, capsys):
    cnn_static.main([str(tmp_path), "--models", "digits", "onet-size", "--repeat", "2", "--samples", "4", "--batches", "1", "2"])
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| digits |", "| onet-size |"))]
    timed = [r for r in rows if r[2] == "idle"]
    assert [(r[0], r[1]) for r in timed] == [("| digits", "1"), ("| digits", "2"), ("| onet-size", "1"), ("| onet-size", "2")]
    assert [r[4].endswith("x") for r in timed] == [False, False, True, True]  # PRelu rewritten: O-Net only
    assert all(r[7] == "refused: no MatMul" for r in timed)  # --dynamic: no MatMul weight in either
    assert all(cell.endswith("x") for r in timed for cell in (r[5], r[6], r[8], r[9], r[10]))
    kernels = {(r[0].strip("| "), r[1]): r for r in rows if r[1] in ("quantrs static", "ort static")}
    for model in ("digits", "onet-size"):
        row = kernels[(model, "quantrs static")]
        assert "QLinearConv" in row[2] and "QGemm" in row[2] and row[3] == "0", row  # no float Conv/Gemm
