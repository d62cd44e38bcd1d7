"""End-to-end tests of ``python -m matgrad`` (bench / check / demo / --help).

``bench --quick`` is run once per module (module-scoped fixture) and its JSON,
table and plot are shared by the tests below; everything else runs filtered
down to a few cheap cases.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

matgrad = pytest.importorskip("matgrad")

# The bench's own limit is ~60 s on 2 cores; leave room for a loaded CI machine.
BENCH_TIMEOUT = 600


def run_cli(*args, timeout=300, env_extra=None):
    env = dict(os.environ)
    env.setdefault("PYTHONIOENCODING", "utf-8")
    if env_extra:
        env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "matgrad", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    json_path = out / "bench.json"
    png_path = out / "bench.png"
    args = ["bench", "--quick", "--json", str(json_path), "--no-progress"]
    if _has("matplotlib"):
        args += ["--plot", str(png_path)]
    proc = run_cli(*args, timeout=BENCH_TIMEOUT)
    data = json.loads(json_path.read_text()) if json_path.exists() else None
    return {"proc": proc, "json": data, "png": png_path, "json_path": json_path}


def test_bench_quick_exits_zero(quick_bench):
    proc = quick_bench["proc"]
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "CHECK FAILED" not in proc.stdout + proc.stderr
    # the table
    assert "GFLOP/s" in proc.stdout
    assert "matmul float32 n=1024" in proc.stdout
    assert "vs numpy" in proc.stdout


def test_bench_quick_json_is_complete(quick_bench):
    data = quick_bench["json"]
    assert data is not None, quick_bench["proc"].stderr
    meta = data["meta"]
    for key in ("matgrad_version", "simd_kernel", "threads", "numpy_version", "torch_version",
                "cpu_model", "date", "quick"):
        assert key in meta, key
    assert meta["matgrad_version"] == matgrad.__version__
    assert meta["quick"] is True
    assert isinstance(meta["threads"], int) and meta["threads"] >= 1

    assert data["failed_checks"] == []
    records = data["results"]
    assert records, "no timed records"
    seen = set()
    for r in records:
        for key in ("name", "op", "dtype", "shape", "impl", "median_s", "gflops",
                    "ratio_vs", "check_passed"):
            assert key in r, (key, r)
        assert (r["name"], r["impl"]) not in seen, "duplicate record"
        seen.add((r["name"], r["impl"]))
        assert isinstance(r["median_s"], float) and math.isfinite(r["median_s"])
        assert r["median_s"] > 0
        assert r["gflops"] > 0
        assert r["check_passed"] is True

    by_case = {}
    for r in records:
        by_case.setdefault(r["name"], {})[r["impl"]] = r
    # every case that ran has matgrad and numpy timings and a ratio vs numpy, but the torch.nn
    # training steps, which compare matgrad.torch.Linear with torch.nn.Linear only
    for name, impls in by_case.items():
        if impls["matgrad"]["op"].startswith("torch_module_step"):
            assert set(impls) == {"matgrad", "torch"}, name
            assert impls["matgrad"]["ratio_vs"]["torch"] > 0, name
            continue
        assert "matgrad" in impls and "numpy" in impls, name
        assert impls["matgrad"]["ratio_vs"]["numpy"] > 0, name
        if _has("torch"):
            assert "torch" in impls, name
            assert impls["matgrad"]["ratio_vs"]["torch"] > 0, name

    # every case is either timed (with a passed check) or skipped with a reason
    cases = data["cases"]
    for c in cases:
        assert c["status"] in ("ok", "skipped"), c
        if c["status"] == "ok":
            assert c["check_passed"] is True
            assert c["name"] in by_case
        else:
            assert c["reason"]
    # each timed case carries the host probe taken right after it
    for c in cases:
        if c["status"] == "ok":
            assert c["host_fma_gflops"] > 0, c["name"]
    skipped = {s["name"] for s in data["skipped"]}
    # matmul always exists: all its quick cases must have run
    for n in (64, 128, 256, 512, 1024):
        for dt in ("float32", "float64"):
            assert f"matmul {dt} n={n}" in by_case
            assert f"matmul {dt} n={n}" not in skipped
    assert "matmul float32 n=4096" not in by_case  # not in --quick
    assert any(c["name"].startswith("matmul small") for c in cases)
    # functions that exist must not be skipped
    for fn, prefix in (("linear", "linear["), ("linear_backward", "linear_backward["),
                       ("matmul_backward", "matmul_backward")):
        if hasattr(matgrad, fn):
            assert any(n.startswith(prefix) for n in by_case), fn


def test_cases_measured_while_the_host_gave_less_cpu_are_named(monkeypatch, capsys):
    from matgrad.bench import driver  # noqa: PLC0415

    peak = {"float32": 200.0, "float64": 100.0}
    results = [{"name": "a", "dtype": "float32", "host_fma_gflops": 190.0},
               {"name": "b", "dtype": "float64", "host_fma_gflops": 50.0},
               {"name": "c", "dtype": "float32"},
               {"name": "d", "dtype": "float32", "host_fma_gflops": 119.0}]
    assert [name for name, _ in driver.host_limited(results, peak)] == ["b", "d"]

    # End to end: a probe at a quarter of the run's peak names the case below the table.
    real = matgrad.fma_peak
    monkeypatch.setattr(matgrad, "fma_peak", lambda dtype="float32", threads=None, seconds=0.2:
                        real(dtype, threads, seconds) / (4 if seconds == driver.HOST_PROBE_S else 1))
    rc = driver.run_bench(filter_re="matmul small float32 n=4$", use_torch=False, repeats=1,
                          min_time=0.001, progress=False)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "host: right after these cases" in out and "  matmul small float32 n=4 (" in out, out


def test_bench_quick_plot(quick_bench):
    pytest.importorskip("matplotlib")
    png = quick_bench["png"]
    assert png.exists(), quick_bench["proc"].stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_check_passes():
    proc = run_cli("check")
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    out = proc.stdout
    assert f"matgrad {matgrad.__version__}" in out
    assert "simd kernel" in out and "threads" in out and "GPU" in out
    assert "FAIL" not in out
    assert " 0 mismatched" in out


def test_help_lists_subcommands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("bench", "check", "demo"):
        assert word in proc.stdout
    proc = run_cli("bench", "--help")
    assert proc.returncode == 0
    for opt in ("--quick", "--json", "--plot", "--threads", "--device"):
        assert opt in proc.stdout
    proc = run_cli("check", "--help")
    assert proc.returncode == 0


def test_default_subcommand_is_bench(tmp_path):
    """`python -m matgrad --filter ...` runs bench; --threads reaches the metadata."""
    js = tmp_path / "small.json"
    proc = run_cli("--filter", "^matmul small float32 n=16$", "--repeats", "1", "--min-time",
                   "0.001", "--no-torch", "--no-progress", "--threads", "1",
                   "--json", str(js))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(js.read_text())
    assert [r["name"] for r in data["results"]] == ["matmul small float32 n=16"] * 2
    assert data["meta"]["threads"] == 1
    assert "µs" in proc.stdout or "us" in proc.stdout  # small calls are shown in µs


def test_bad_threads_is_usage_error():
    proc = run_cli("bench", "--threads", "0")
    assert proc.returncode == 2
    assert "--threads" in proc.stderr


def test_device_gpu_without_gpu_exits_2():
    # An adapter name that matches nothing leaves no adapter, on any machine.
    proc = run_cli("bench", "--quick", "--device", "gpu", timeout=120,
                   env_extra={"WGPU_ADAPTER_NAME": "no-such-adapter-xyz"})
    assert proc.returncode == 2
    assert "GPU" in proc.stderr
    assert "GFLOP/s" not in proc.stdout  # it stopped before benchmarking


def test_device_gpu_times_device_resident_products(tmp_path):
    from matgrad import gpu

    if not gpu.is_available():
        pytest.skip("no GPU adapter (CI installs lavapipe, which has one)")
    out = tmp_path / "gpu.json"
    proc = run_cli("bench", "--quick", "--device", "gpu", "--no-progress", "--filter",
                   "device-resident|matmul float64 n=64$", "--json", str(out), timeout=BENCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu: " in proc.stdout  # the adapter is printed
    recs = {r["name"]: r for r in json.loads(out.read_text())["cases"]}
    f64 = recs["matmul float64 n=64"]
    assert f64["status"] == "skipped" and "float32 only" in f64["reason"]
    resident = [r for r in recs.values() if "device-resident" in r["name"]]
    assert {r["op"] for r in resident} == {"matmul[device-resident]", "linear[device-resident]",
                                           "linear_backward[device-resident]"}
    ran = [r for r in resident if r["status"] == "ok"]
    assert ran, "no device-resident case ran"
    for r in ran:
        assert r["check_passed"], r
        assert r.get("peak_share") is None  # the CPU's FMA peak says nothing of a GPU
    for r in resident:
        if r["status"] == "skipped":
            assert gpu.adapter_info()["device_type"] == "cpu" and "software adapter" in r["reason"]


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from matgrad.__main__ import main\n"
        f"sys.exit(main(['bench', '--quick', '--plot', {str(tmp_path / 'x.png')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "pip install 'matgrad[plot]'" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_demo_dispatch_passes_its_arguments_on():
    proc = run_cli("demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--epochs" in proc.stdout
