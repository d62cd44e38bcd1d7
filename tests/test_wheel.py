"""What goes to PyPI: ``scripts/build-wheels`` writes an sdist and, built from that sdist, a
manylinux2014 abi3 wheel. The wheel's tag is the one auditwheel allows, its metadata is what
a PyPI user expects, and installed into a fresh virtualenv with no Rust toolchain on PATH it
imports, reports its version and passes the matmul and gradient tests."""

import email.parser
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "target" / "wheel-tools" / "bin"


def _workspace_version() -> str:
    # The one place the version is written (pyproject's version is dynamic: maturin reads it).
    text = (ROOT / "Cargo.toml").read_text()
    section = text.split("[workspace.package]", 1)[1]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if shutil.which("cargo") is None:
        pytest.skip("building the wheel needs cargo")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-wheels"), str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    (sdist,) = out.glob("matgrad-*.tar.gz")
    (wheel,) = out.glob("matgrad-*.whl")
    return sdist, wheel


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode()), z.namelist()


def test_wheel_is_manylinux2014_abi3_and_holds_the_extension_stubs_and_license(dist):
    _, wheel = dist
    version = _workspace_version()
    assert wheel.name == (
        f"matgrad-{version}-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    ), wheel.name
    _, names = _metadata(wheel)
    assert any(n.startswith("matgrad/_matgrad") and n.endswith(".so") for n in names), names
    for stub in ("matgrad/_matgrad.pyi", "matgrad/py.typed", "matgrad/__init__.py"):
        assert stub in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names


def test_auditwheel_accepts_the_tag(dist):
    # Run here as well as in the script: the test would catch a script that stopped checking.
    _, wheel = dist
    report = subprocess.run(
        [str(TOOLS / "auditwheel"), "show", str(wheel)], capture_output=True, text=True, check=True,
    ).stdout
    flat = " ".join(report.split())
    assert 'consistent with the following platform tag: "manylinux_2_17_x86_64"' in flat, report
    # No library is bundled or needed beyond glibc's (wgpu opens Vulkan at run time).
    needed = set(re.findall(r"(lib[\w+-]+\.so\.\d+) with versions", flat))
    assert needed <= {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libgcc_s.so.1"}, needed


def test_metadata_is_what_pypi_shows(dist):
    _, wheel = dist
    meta, _ = _metadata(wheel)
    assert meta["Name"] == "matgrad"
    assert meta["Version"] == _workspace_version()
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"
    assert meta["Description-Content-Type"].startswith("text/markdown")
    classifiers = meta.get_all("Classifier")
    for c in ("Programming Language :: Python :: 3 :: Only", "Programming Language :: Rust",
              "Operating System :: POSIX :: Linux", "Typing :: Typed"):
        assert c in classifiers
    assert "numpy>=1.24" in meta.get_all("Requires-Dist")
    # The long description is README itself, tables included.
    assert meta.get_payload().strip() == (ROOT / "README.md").read_text().strip()


def test_sdist_holds_what_a_build_from_scratch_needs(dist):
    sdist, _ = dist
    prefix = f"matgrad-{_workspace_version()}/"
    with tarfile.open(sdist) as t:
        names = {n.removeprefix(prefix) for n in t.getnames()}
    for needed in ("pyproject.toml", "Cargo.toml", "Cargo.lock", "README.md", "LICENSE",
                   "rust/core/Cargo.toml", "rust/core/src/lib.rs", "rust/python/Cargo.toml",
                   "rust/python/src/lib.rs", "rust/core/src/gpu/gemm.wgsl",
                   "python/matgrad/__init__.py", "python/matgrad/_matgrad.pyi"):
        assert needed in names, needed
    assert not any(n.startswith(("target/", ".git/")) for n in names)
    # (That it builds is shown by the wheel: build-wheels builds it from the unpacked sdist.)


def test_wheel_installs_and_passes_tests_without_rust(dist, tmp_path):
    _, wheel = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    no_rust = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and not (Path(p) / "cargo").exists() and not (Path(p) / "rustc").exists()
    )
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{no_rust}"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True, env=env, capture_output=True,
    )
    # numpy, pytest, hypothesis and torch come from the environment running this suite (no
    # network needed), appended to the venv's path by a .pth file written after the install
    # (so pip saw no matgrad there); the venv's own site-packages, holding the wheel's
    # matgrad, comes first on the path and shadows any other.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "outer-environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    def output(*args):
        r = subprocess.run([str(python), *args], env=env, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout.strip()

    where = output("-c", "import matgrad; print(matgrad.__file__)")
    assert where.startswith(str(venv)), where
    assert output("-m", "matgrad", "--version") == _workspace_version()
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "test_matmul.py"), str(ROOT / "tests" / "test_grad.py")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b\d{2,} passed\b", result.stdout), result.stdout[-3000:]
