"""The asv suites as a CI smoke test: ``asv run --python=same --quick`` must run every
benchmark (a failing or unexpectedly skipped benchmark fails), via benchmarks/smoke.py."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_asv_quick_smoke_run_is_green():
    pytest.importorskip("asv")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "smoke.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
