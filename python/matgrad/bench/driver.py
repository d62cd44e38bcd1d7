"""``python -m matgrad bench``: every case checked against its reference, then timed against
NumPy and torch, interleaved (see :mod:`.timing`); a table, and optionally JSON and a plot."""

from __future__ import annotations

import gc
import re
import sys
import time
from typing import Any

import numpy as np

from . import report
from .cases import Case, build_cases
from .env import gpu_namespace, import_torch, metadata, pinned_threads
from .outcomes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Skip
from .timing import time_interleaved, wait_until_quiet

BASELINES = ("numpy", "torch")

# After each case a short FMA loop on the bench's threads (HOST_PROBE_S) tells whether the host
# gave them the CPU the peak was measured on: a shared host at times runs two vCPUs at one
# core's FMA rate (Zen 4, 2026-12-07: 118-122 GFLOP/s on 2 threads against 231 seconds apart,
# and a 64^3 product at one thread's speed meanwhile; docs/measurements.md). Cases measured
# under HOST_SLOW_SHARE of the run's peak are named below the table: their ratios read low (a
# 20 ms loop alone reads 80-100 % of a 0.2 s one; the co-scheduled state reads ~50 %).
HOST_PROBE_S = 0.02
HOST_SLOW_SHARE = 0.6


def run_case(case: Case, repeats: int, min_sample: float) -> dict:
    """Checks, then times one case; a record of what happened."""
    rec: dict[str, Any] = {
        "name": case.name, "op": case.op, "dtype": case.dtype, "shape": case.shape,
        "x": case.x, "flops": case.flops, "small": case.small,
    }
    try:
        impls, check = case.build()
        ok, detail = check()
    except Skip as exc:
        rec.update(status="skipped", reason=str(exc))
        return rec
    except Exception as exc:
        ok, detail = False, f"matgrad raised {type(exc).__name__}: {exc}"
        rec.update(check_passed=False, check_detail=detail, status="error")
        return rec
    rec["check_passed"] = bool(ok)
    rec["check_detail"] = detail
    # Drop a baseline that cannot run this case (e.g. an odd torch build).
    for name in [n for n in impls if n != "matgrad"]:
        try:
            impls[name]()
        except Exception as exc:
            rec.setdefault("notes", []).append(f"{name} baseline dropped: {exc!r}")
            del impls[name]
    times = time_interleaved(impls, repeats=repeats, min_sample=min_sample)
    for t in times.values():
        t["gflops"] = case.flops / t["median_s"] / 1e9 if t["median_s"] > 0 else None
    mt = times["matgrad"]["median_s"]
    rec.update(status="ok", impls=times,
               ratio={b: times[b]["median_s"] / mt for b in BASELINES if b in times and mt > 0})
    return rec


class Progress:
    """A one-line progress bar on stderr (a line per case when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled = total, 0, enabled
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        text = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label}"
        sys.stderr.write("\r" + text[:100].ljust(100) if self.tty else text + "\n")
        sys.stderr.flush()
        self.done += 1

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def _usage(message: str) -> int:
    print(f"matgrad bench: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_bench(*, quick: bool = False, json_path: str | None = None,
              plot_path: str | None = None, threads: int | None = None,
              device: str = "cpu", use_torch: bool = True, filter_re: str | None = None,
              repeats: int | None = None, min_time: float | None = None,
              progress: bool = True) -> int:
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError:
            return _usage("--plot needs matplotlib, which is not installed.\n"
                          "Install it with:  pip install 'matgrad[plot]'")
    if threads is not None and threads < 1:
        return _usage("--threads must be >= 1")
    try:
        pattern = re.compile(filter_re) if filter_re else None
    except re.error as exc:
        return _usage(f"bad --filter regex: {exc}")

    import matgrad as mg  # noqa: PLC0415

    ns: Any = mg
    if device == "gpu":
        try:
            ns = gpu_namespace()
        except Skip as exc:
            return _usage(f"--device gpu requested but no GPU backend can be used: {exc}.\n"
                          "Run without --device gpu (or with --device cpu) to benchmark the "
                          "CPU kernels.")
    torch = import_torch(use_torch)
    if use_torch and torch is None:
        print("matgrad bench: torch is not installed; comparing against NumPy only "
              "(pip install 'matgrad[torch]')", file=sys.stderr)

    cases = build_cases(ns, torch, quick)
    if pattern is not None:
        cases = [c for c in cases if pattern.search(c.name)]
        if not cases:
            return _usage(f"--filter {filter_re!r} matches no case")
    reps = repeats if repeats is not None else (3 if quick else 7)
    min_sample = min_time if min_time is not None else (0.005 if quick else 0.020)

    t_start = time.perf_counter()
    results: list[dict] = []
    with pinned_threads(mg, torch, threads) as n_threads:
        # The FMA peak of this CPU, on the bench's threads: what each case is a share of.
        peak = _fma_peak(mg, n_threads)
        bar = Progress(len(cases), enabled=progress)
        try:
            for case in cases:
                bar.step(case.name)
                rec = run_case(case, reps, min_sample)
                if device != "gpu" and rec.get("status") == "ok" and rec["dtype"] in peak:
                    # (After the pause that lets the other libraries' threads go quiet, as
                    # for the peak itself: straight after the samples it read ~60 %.)
                    wait_until_quiet()
                    rec["host_fma_gflops"] = mg.fma_peak(rec["dtype"], n_threads, HOST_PROBE_S)
                results.append(rec)
                gc.collect()
        finally:
            bar.close()
        # Measured again at the end, the higher of the two kept: the peak is a ceiling, and
        # a moment of the host's noise at the start had put cases at 129 % of it.
        end = _fma_peak(mg, n_threads)
        peak = {dt: max(rate, end[dt]) for dt, rate in peak.items()}
        meta = metadata(mg, torch, n_threads, device=device, quick=quick, repeats=reps,
                        min_sample_s=min_sample, fma_peak_gflops=peak,
                        gpu_adapter=ns.adapter_info() if device == "gpu" else None)
    for rec in results:
        # The FMA peak is the CPU's: a share of it means nothing for products on a GPU.
        if device != "gpu" and rec.get("status") == "ok" and rec["dtype"] in peak and rec["impls"]["matgrad"]["gflops"]:
            rec["peak_share"] = rec["impls"]["matgrad"]["gflops"] / peak[rec["dtype"]]
    meta["wall_s"] = round(time.perf_counter() - t_start, 2)
    return _report(results, meta, reps, json_path, plot_path)


def host_limited(results: list[dict], peak: dict[str, float]) -> list[tuple[str, float]]:
    """(name, probe's share of the peak) of the cases whose host probe ran under
    HOST_SLOW_SHARE of the run's FMA peak."""
    slow = []
    for c in results:
        rate, top = c.get("host_fma_gflops"), peak.get(c.get("dtype"))
        if rate is not None and top and rate < HOST_SLOW_SHARE * top:
            slow.append((c["name"], rate / top))
    return slow


def _fma_peak(mg, threads: int) -> dict[str, float]:
    """GFLOP/s of the register-only FMA loop per dtype, after the other libraries' threads
    have gone quiet."""
    wait_until_quiet()
    return {dt: mg.fma_peak(dt, threads) for dt in ("float32", "float64")}


def _report(results: list[dict], meta: dict, reps: int, json_path, plot_path) -> int:
    print(f"matgrad {meta['matgrad_version']}  kernel={meta['simd_kernel']}  "
          f"threads={meta['threads']}  numpy {np.__version__}"
          + (f"  torch {meta['torch_version']}" if meta["torch_version"] else "  (no torch)")
          + f"  device={meta['device']}")
    print(f"cpu: {meta['cpu_model']}  ({meta['cpu_count']} logical cpus)")
    if meta.get("gpu_adapter"):
        gpu = meta["gpu_adapter"]
        print(f"gpu: {gpu['name']} ({gpu['device_type']}, {gpu['backend']}, driver {gpu['driver']} "
              f"{gpu['driver_info']})")
    peak = meta["fma_peak_gflops"]
    print(f"FMA peak, the higher of the run's start and end ({meta['simd_kernel']}, {meta['threads']} threads): "
          f"{peak['float32']:.0f} GFLOP/s float32, {peak['float64']:.0f} float64; "
          "'peak' = matgrad's share of it")
    print(f"median of {reps} repeats, implementations interleaved; ratio = baseline time / "
          "matgrad time (>1: matgrad faster)")
    print()
    print(report.format_table(results))
    skipped = [c for c in results if c.get("status") == "skipped"]
    if skipped:
        print()
        reasons: dict[str, list[str]] = {}
        for c in skipped:
            reasons.setdefault(c["reason"], []).append(c["name"])
        for reason, names in reasons.items():
            print(f"skipped {len(names)} case(s): {reason}")
    for c in results:
        for note in c.get("notes", []):
            print(f"note: {c['name']}: {note}")
    slow = host_limited(results, peak)
    if slow:
        print(f"\nhost: right after these cases the {meta['threads']} threads' FMA loop ran under "
              f"{HOST_SLOW_SHARE:.0%} of the peak (the host gave them less CPU than at the run's start "
              "and end), so their ratios read low:")
        for name, share in slow:
            print(f"  {name} ({share:.0%})")
    failed = [c for c in results if c.get("check_passed") is False]

    if json_path:
        report.write_json(json_path, meta, results)
        print(f"\nwrote {json_path}")
    if plot_path:
        try:
            report.plot(results, plot_path, meta)
            print(f"wrote {plot_path}")
        except Exception as exc:
            print(f"matgrad bench: could not write the plot: {exc}", file=sys.stderr)
            if not failed:
                return EXIT_FAILED

    print(f"\n{len(results) - len(skipped)} case(s) run, {len(skipped)} skipped, "
          f"{meta['wall_s']:.1f} s")
    if failed:
        rule = "!" * 72
        print(f"\n{rule}\nCORRECTNESS CHECK FAILED for {len(failed)} case(s):", file=sys.stderr)
        for c in failed:
            print(f"  {c['name']}: {c.get('check_detail')}", file=sys.stderr)
        print(rule, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
