"""``python -m matgrad bench --dask``: :func:`matgrad.dask.matmul` against
:func:`dask.array.matmul` (NumPy blocks) on one ``distributed.LocalCluster``, same chunks,
operands persisted on the workers first.

For each case: the result of both checked on sampled tiles against float64, then repeats in
which the two run interleaved (alternating which goes first, a pause between them so the
other's work is done), each materialising the whole product on the workers (``persist``);
the median wall time, the graph's task count (the operands' own tasks not counted) and the
cluster's peak process memory (both workers, sampled by distributed's MemorySampler).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from .outcomes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

SIZES = (8192, 16384)
QUICK_SIZES = (4096,)
CHUNK = 2048
PAUSE_S = 1.0


def task_count(result, *operands) -> int:
    """Tasks of ``result``'s graph that are not its operands' own."""
    own = set()
    for x in operands:
        own |= set(x.__dask_graph__())
    return len(set(result.__dask_graph__()) - own)


def _check(client, product, A, B, dtype) -> tuple[bool, str]:
    """Tiles (0, 0) and the last one of ``product`` against float64 products of the panels."""
    C = product(A, B)
    last = C.numblocks[0] - 1, C.numblocks[1] - 1
    got = client.compute([C.blocks[0, 0], A.blocks[0, :], B.blocks[:, 0],
                          C.blocks[last], A.blocks[last[0], :], B.blocks[:, last[1]]])
    c0, a0, b0, c1, a1, b1 = client.gather(got)
    worst = 0.0
    for c, a, b in ((c0, a0, b0), (c1, a1, b1)):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        err = np.abs(c - a64 @ b64) / (np.abs(a64) @ np.abs(b64))
        worst = max(worst, float(err.max()) / (a.shape[1] * np.finfo(dtype).eps))
    return worst <= 3.0, f"max error {worst:.3g} k·eps·|A||B| on two tiles"


def run_dask_bench(*, quick: bool = False, repeats: int | None = None, workers: int = 2,
                   json_path: str | None = None, filter_re: str | None = None) -> int:
    try:
        import dask.array as da  # noqa: PLC0415
        from distributed import Client, LocalCluster, wait  # noqa: PLC0415
        from distributed.diagnostics import MemorySampler  # noqa: PLC0415
    except ImportError:
        print("matgrad bench: --dask needs dask and distributed: pip install 'matgrad[dask]'")
        return EXIT_USAGE
    import re  # noqa: PLC0415

    import matgrad  # noqa: PLC0415
    import matgrad.dask as md  # noqa: PLC0415

    reps = repeats or (1 if quick else 3)
    impls = {"matgrad.dask": md.matmul, "dask.array": da.matmul}
    cases = [(n, dt) for n in (QUICK_SIZES if quick else SIZES) for dt in ("float32", "float64")]
    if filter_re:
        cases = [(n, dt) for n, dt in cases if re.search(filter_re, f"dask matmul {dt} n={n}")]
        if not cases:
            print(f"matgrad bench: --filter {filter_re!r} matches no dask case")
            return EXIT_USAGE
    records, failed = [], []
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        print(f"matgrad {matgrad.__version__} ({matgrad.simd_kernel()}) on a LocalCluster of {workers} "
              f"workers, one thread each; chunks {CHUNK}x{CHUNK}, operands persisted; median of {reps}, "
              "interleaved; ratio = dask.array time / matgrad.dask time")
        print()
        head = f"{'case':28} {'matgrad.dask':>12} {'dask.array':>11} {'ratio':>6} {'tasks':>13} {'peak memory GiB':>16}  check"
        print(head)
        print("-" * len(head))
        for n, dt in cases:
            dtype = np.dtype(dt)
            rng = da.random.default_rng(n)
            A = rng.standard_normal((n, n), chunks=CHUNK, dtype=dtype).persist()
            B = rng.standard_normal((n, n), chunks=CHUNK, dtype=dtype).persist()
            wait([A, B])
            checks = [_check(client, f, A, B, dtype) for f in impls.values()]
            ok = all(c[0] for c in checks)
            times = {name: [] for name in impls}
            peaks = {name: 0 for name in impls}
            sampler = MemorySampler()
            for r in range(reps):
                order = list(impls) if r % 2 == 0 else list(impls)[::-1]
                for name in order:
                    time.sleep(PAUSE_S)
                    label = f"{name}-{r}"
                    with sampler.sample(label, measure="process", interval=0.1):
                        t0 = time.perf_counter()
                        C = impls[name](A, B).persist()
                        wait(C)
                        times[name].append(time.perf_counter() - t0)
                    del C
                    peaks[name] = max(peaks[name], max((v for _, v in sampler.samples[label]), default=0))
            med = {name: statistics.median(v) for name, v in times.items()}
            tasks = {name: task_count(f(A, B), A, B) for name, f in impls.items()}
            rec = {"name": f"dask matmul {dt} n={n}", "n": n, "dtype": dt, "chunk": CHUNK, "workers": workers,
                   "median_s": med, "times_s": times, "tasks": tasks, "peak_process_bytes": peaks,
                   "ratio": med["dask.array"] / med["matgrad.dask"], "check_passed": ok,
                   "check_detail": "; ".join(c[1] for c in checks)}
            records.append(rec)
            if not ok:
                failed.append(rec)
            print(f"{rec['name']:28} {med['matgrad.dask']:>10.2f} s {med['dask.array']:>9.2f} s "
                  f"{rec['ratio']:>5.2f}x {tasks['matgrad.dask']:>6}/{tasks['dask.array']:<6} "
                  f"{peaks['matgrad.dask'] / 2**30:>7.2f}/{peaks['dask.array'] / 2**30:<7.2f}  "
                  f"{'ok' if ok else 'FAILED'}", flush=True)
            del A, B
    print("\ntasks and peak memory: matgrad.dask/dask.array (memory: both workers' processes)")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"matgrad_version": matgrad.__version__, "simd_kernel": matgrad.simd_kernel(),
                       "records": records}, f, indent=1)
        print(f"wrote {json_path}")
    for rec in failed:
        print(f"CORRECTNESS CHECK FAILED: {rec['name']}: {rec['check_detail']}")
    return EXIT_FAILED if failed else EXIT_OK
