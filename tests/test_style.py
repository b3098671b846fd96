"""The README's lint command passes: `ruff check .` over the whole tree."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


NO_RUFF = "ruff not installed: pip install -e '.[cpu,test]'"


@pytest.mark.skipif(shutil.which("ruff") is None, reason=NO_RUFF)
def test_ruff_clean() -> None:
    res = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
