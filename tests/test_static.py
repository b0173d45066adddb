"""Static checks that CI runs with the tests: ruff (lint and format) and mypy with no errors in ``src/`` (the types
document the interfaces; a change that adds an error fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format_are_clean():
    pytest.importorskip("ruff", reason="ruff is part of the test extra: pip install -e '.[test]'")
    lint = _run("ruff", "check", "--select", "F,E,I", "src", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = _run("ruff", "format", "--check", "src", "tests", "benchmarks")
    assert fmt.returncode == 0, f"run `ruff format src tests benchmarks`:\n{fmt.stdout[-3000:]}"


@pytest.mark.slow
def test_mypy_finds_no_error():
    pytest.importorskip("mypy", reason="mypy is part of the test extra: pip install -e '.[test]'")
    out = _run("mypy")  # settings in pyproject.toml [tool.mypy]
    assert out.returncode == 0 and "Success" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]
