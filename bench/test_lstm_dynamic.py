"""bench/lstm_dynamic.py, once, small: every model builds, runs and prints its row; the
dynamic one is within quantize_dynamic's accuracy. (No timing is asserted.)"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lstm_dynamic  # noqa: E402


def test_lstm_dynamic_prints_every_model(tmp_path, capsys):
    lstm_dynamic.main([str(tmp_path), "--sizes", "16x32", "--repeat", "2"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 16x32 |")]
    assert [r[2] for r in rows] == ["float", "quantrs INT8 weight-only", "quantrs --dynamic", "ort quantize_dynamic"]
    cosine = {r[2]: float(r[5].rstrip(" |")) for r in rows}
    assert cosine["quantrs --dynamic"] > 0.999 and cosine["quantrs --dynamic"] >= cosine["ort quantize_dynamic"] - 1e-4
