"""The README renders as intended: every code fence closes, and every section heading is outside
code (an unclosed fence once turned four sections into one code block)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def fences(text: str) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a code block after this line) for every fence line. A fence
    opens with ``` (or ~~~) at the start of a line and closes with the same marker alone."""
    out, inside, marker = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not inside and re.match(r"^(```|~~~)", stripped):
            inside, marker = True, stripped[:3]
            out.append((number, line, inside))
        elif inside and stripped == marker:
            inside = False
            out.append((number, line, inside))
        elif inside is False and "```" in line and not line.lstrip().startswith("`"):
            out.append((number, line, inside))  # a fence glued to text: never valid Markdown
    return out


def code_lines(text: str) -> set[int]:
    inside, marker, lines = False, "", set()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not inside and re.match(r"^(```|~~~)", stripped):
            inside, marker = True, stripped[:3]
        elif inside and stripped == marker:
            inside = False
        elif inside:
            lines.add(number)
    return lines


@pytest.fixture(scope="module")
def text() -> str:
    if not README.exists():
        pytest.skip("README.md is not beside the tests (installed package)")
    return README.read_text(encoding="utf-8")


def test_every_fence_closes(text):
    found = fences(text)
    assert not found or found[-1][2] is False, f"the fence on line {found[-1][0]} never closes"
    glued = [n for n, line, _ in found if not re.match(r"^\s*(```|~~~)", line)]
    assert not glued, f"a fence shares its line with text on line(s) {glued}"


def test_headings_are_outside_code(text):
    inside = code_lines(text)
    headings = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("## ")]
    assert len(headings) >= 5
    assert not [n for n in headings if n in inside], "a section heading is inside a code block"


def test_the_checker_catches_the_old_defect():
    broken = "## A\n\n```python\nx = 1\n``` Some text\n\n## B\n"
    assert fences(broken)[-1][2] is True  # the glued fence does not close the block
    assert 7 in code_lines(broken)
