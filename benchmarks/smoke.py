"""Smoke run of the asv suites against the matgrad installed in this Python.

    python benchmarks/smoke.py [--full] [--publish] [-- extra asv run args]

Runs ``asv machine --yes`` (asv needs a machine description and would prompt
for one), then ``asv run --python=same --quick --show-stderr
--launch-method=forkserver`` from the repository root, and fails (exit 1) when

* asv itself fails (it exits non-zero when a benchmark raises or the suite
  does not import),
* a benchmark was skipped for an unexpected reason: only the n=4096 cases
  (skipped here unless ``--full``), torch benchmarks when torch is not
  installed and GPU benchmarks when this machine has no GPU adapter (no
  Vulkan driver: CI installs lavapipe, so there they must run) may skip; a
  matgrad function reported missing is a failure,
* with a git HEAD (results are then saved under it with
  ``--set-commit-hash``): the saved results hold a failed (None) value.

``--publish`` also runs ``asv publish`` (HTML under .asv/html) and checks it.
asv imports this module too when it discovers the suites; it defines no
benchmark and does its work only under ``__main__``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED_SKIPS = (
    re.compile(r"MATGRAD_ASV_SKIP_LARGE"),
    re.compile(r"torch is not available"),
    # bench_gpu.py past n = 1024 on lavapipe (a CPU Vulkan driver): minutes per product.
    re.compile(r"software adapter"),
)
# bench_gpu.py's skip reason; allowed only where this machine has no GPU adapter.
NO_GPU_SKIP = re.compile(r"no GPU adapter")


def _gpu_available() -> bool:
    from matgrad import gpu  # noqa: PLC0415

    return gpu.is_available()


def _run(cmd: list[str], env: dict | None = None, capture: bool = False):
    print("+ " + " ".join(cmd), flush=True)
    if not capture:
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode, ""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    sys.stdout.flush()
    return proc.wait(), "".join(lines)


def _head() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True)
    except OSError:
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _failed_results(sha: str) -> list[str]:
    """Benchmarks whose saved result (for commit ``sha``) holds a None (= failed)."""
    bad = []
    files = [f for f in glob.glob(os.path.join(ROOT, ".asv", "results", "*", f"{sha[:8]}-*.json"))]
    if not files:
        return ["<no results file saved for this commit>"]
    for path in files:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        cols = data.get("result_columns", ["result"])
        idx = cols.index("result") if "result" in cols else 0
        for name, row in data.get("results", {}).items():
            value = row[idx] if isinstance(row, list) else row
            if value is None or (isinstance(value, list) and any(v is None for v in value)):
                bad.append(f"{name} ({os.path.basename(path)})")
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="include the n=4096 matmul cases")
    p.add_argument("--publish", action="store_true", help="run asv publish afterwards")
    p.add_argument("asv_args", nargs="*", help="extra arguments for asv run (after --)")
    args = p.parse_args(argv)

    env = dict(os.environ)
    if not args.full:
        env["MATGRAD_ASV_SKIP_LARGE"] = "1"
    asv = [sys.executable, "-m", "asv"]

    rc, _ = _run(asv + ["machine", "--yes"], env=env)
    if rc:
        print("smoke: asv machine --yes failed", file=sys.stderr)
        return 1
    # forkserver: the suites (numpy, torch, matgrad) are imported once and each parameter
    # point runs in a fork of that process; asv's default spawns a fresh interpreter per point,
    # which was half of this run (Zen 3, 2 cores: 486 s against 244).
    cmd = asv + ["run", "--python=same", "--quick", "--show-stderr", "--launch-method=forkserver"]
    sha = _head()
    if sha:
        cmd += ["--set-commit-hash", sha]
    cmd += args.asv_args
    rc, out = _run(cmd, env=env, capture=True)

    problems = []
    if rc:
        problems.append(f"asv run exited with status {rc}")
    allowed = ALLOWED_SKIPS + (() if _gpu_available() else (NO_GPU_SKIP,))
    for reason in re.findall(r"asv: skipped: (.*)", out):
        if not any(pat.search(reason) for pat in allowed):
            problems.append(f"unexpected skip: {reason.strip()}")
    if re.search(r"^\[.*\s+failed\s*$", out, re.M):
        problems.append("asv reported a failed benchmark")
    if sha and not args.asv_args:
        problems += [f"failed result: {b}" for b in _failed_results(sha)]
    if args.publish:
        if not sha:
            problems.append("asv publish needs results saved under a commit: no git HEAD")
        else:
            rc, _ = _run(asv + ["publish"], env=env)
            index = os.path.join(ROOT, ".asv", "html", "index.html")
            if rc:
                problems.append(f"asv publish exited with status {rc}")
            elif not os.path.exists(index):
                problems.append(f"asv publish wrote no {index}")

    if problems:
        print("\nsmoke: FAILED", file=sys.stderr)
        for line in dict.fromkeys(problems):  # unique, in order
            print(f"  - {line}", file=sys.stderr)
        return 1
    print("\nsmoke: asv suites OK" + (" (results saved for " + sha[:8] + ")" if sha else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
