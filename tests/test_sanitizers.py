"""The core under the sanitizers, bounded: its tests under AddressSanitizer (scripts/sanitize)
and each libFuzzer target for 30 s from the corpus kept in fuzz/corpus (scripts/fuzz, also
under AddressSanitizer, the corpus left as it is). Both need the nightly toolchain, which
these machines have; without it they skip, saying so. And the thread team's protocol
model-checked with loom (scripts/model-check, stable toolchain)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _nightly() -> bool:
    if shutil.which("cargo") is None:
        return False
    return subprocess.run(["cargo", "+nightly", "--version"], capture_output=True).returncode == 0


nightly = pytest.mark.skipif(not _nightly(), reason="needs the nightly Rust toolchain (-Zsanitizer)")


def _run(*cmd, env=None):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    return r.stdout + r.stderr


@nightly
def test_core_tests_are_clean_under_address_sanitizer():
    out = _run("bash", "scripts/sanitize")
    assert "AddressSanitizer" not in out
    assert out.count("test result: ok") >= 5, out[-3000:]


@nightly
def test_fuzz_targets_run_clean_for_30_seconds():
    import os

    out = _run("bash", "scripts/fuzz", "30", env={**os.environ, "FUZZ_KEEP_CORPUS": "1"})
    assert "DONE" in out and "SUMMARY" not in out, out[-3000:]


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_the_thread_protocol_holds_in_every_interleaving():
    out = _run("bash", "scripts/model-check")
    assert "loom_model::two_threads_two_runs_back_to_back ... ok" in out, out[-3000:]
    assert "loom_model::three_threads_one_run ... ok" in out, out[-3000:]
