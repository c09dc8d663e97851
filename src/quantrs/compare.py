"""Running a model and its quantized copy on the same inputs, and how close their outputs are:
the comparison `validate`, `calibrate` (its fidelity line), `auto` (its verification) and
`benchmark` share. No structure checks and no per-layer work here: those are validate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from quantrs.report import OutputAgreement

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

__all__ = ["Feeds", "Steps", "run_model", "agreements"]

Feeds = list[dict[str, np.ndarray]]


def _session(model: str | bytes) -> InferenceSession:
    from quantrs._ort import session

    return session(model)


class Steps:
    """Counts runs towards a total for a progress callback (done, total)."""

    def __init__(self, progress: Callable[[int, int], None] | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def run_model(
    model: str | bytes, feeds: Feeds, outputs: list[str] | None = None, *, progress: Callable[[], None] | None = None
) -> dict[str, list[np.ndarray]]:
    """Every output (or `outputs`) of the model for each feed, in onnxruntime on the CPU;
    `progress()` after each feed."""
    session = _session(model)
    names = outputs or [o.name for o in session.get_outputs()]
    results: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            results[name].append(np.asarray(value))
        if progress is not None:
            progress()
    return results


def agreements(reference: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]]) -> list[OutputAgreement]:
    out = []
    for name, ref_values in reference.items():
        if not ref_values or not all(np.asarray(v).dtype.kind in "fiub" for v in ref_values):
            continue  # not a tensor (a ZipMap's sequence of maps): nothing to compare numerically
        a = np.concatenate([r.astype(np.float64).ravel() for r in ref_values])
        b = np.concatenate([g.astype(np.float64).ravel() for g in got[name]])
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        diff = float(np.linalg.norm(a - b))
        cosine = 1.0 if na == 0 and nb == 0 else (float(a @ b) / (na * nb) if na and nb else 0.0)
        relative = 0.0 if diff == 0 else (diff / na if na else math.inf)
        top1 = None
        if ref_values[0].dtype.kind == "f" and ref_values[0].ndim >= 2 and ref_values[0].shape[-1] >= 2:
            hits = [np.argmax(r, axis=-1) == np.argmax(g, axis=-1) for r, g in zip(ref_values, got[name])]
            top1 = float(np.concatenate([h.ravel() for h in hits]).mean())
        out.append(OutputAgreement(name, cosine, float(np.abs(a - b).max()) if a.size else 0.0, relative, top1))
    return out
