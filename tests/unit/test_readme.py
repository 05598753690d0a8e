"""Every ```python block of the README runs, so the documentation cannot drift."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_readme_has_snippets() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index: int) -> None:
    name = f"readme_snippet_{index}"
    module = types.ModuleType(name)  # a real module: @module() scans the module it is in
    sys.modules[name] = module
    try:
        exec(compile(BLOCKS[index], f"README.md snippet {index}", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
