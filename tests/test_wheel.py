"""The wheel: built by maturin (abi3 for CPython >= 3.10), installed into a fresh virtualenv
with no Rust toolchain on PATH, it imports and passes the matmul tests."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if shutil.which("cargo") is None:
        pytest.skip("building the wheel needs cargo")
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("matgrad-*.whl")
    return path


def test_wheel_is_abi3_and_holds_the_extension_and_stubs(wheel):
    assert "-cp310-abi3-" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("matgrad/_matgrad") and n.endswith(".so") for n in names), names
    for stub in ("matgrad/_matgrad.pyi", "matgrad/py.typed", "matgrad/__init__.py"):
        assert stub in names


def test_wheel_installs_and_passes_tests_without_rust(wheel, tmp_path):
    venv = tmp_path / "venv"
    # System site-packages provide numpy/pytest/hypothesis (no network needed); the wheel's
    # matgrad, installed into the venv itself, shadows any matgrad installed there.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    no_rust = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and not (Path(p) / "cargo").exists()
    )
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{no_rust}"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    where = subprocess.run(
        [str(python), "-c", "import matgrad; print(matgrad.__file__)"],
        check=True, env=env, capture_output=True, text=True, cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)), where
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_matmul.py")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
