"""The long differential-fuzzing campaign: the cases of tests/fuzzing.py drawn from seeded
NumPy generators (no hypothesis: ~10x faster per case), spread over worker processes.

    python3 tests/fuzz_campaign.py --cases 1000000 --jobs 2 [--seed S] [--target NAME ...]

Case i of seed S is drawn from ``np.random.default_rng([S, i])``, so ``--replay S:i`` reruns
one case alone. Prints the cases run per target, the time, and every disagreement (its seed,
plan and both outcomes); exits 1 if there was one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import fuzzing  # noqa: E402


def run_case(seed: int, i: int, targets: list[str]) -> tuple[str, str | None]:
    rng = np.random.default_rng([seed, i])
    name = targets[i % len(targets)]
    draw, check = fuzzing.TARGETS[name]
    try:
        check(draw(fuzzing.RandomDraws(rng)))
    except fuzzing.Disagreement as e:
        return name, f"case {seed}:{i}\n{e}"
    except Exception as e:  # noqa: BLE001 -- a crash of the harness itself is a finding too
        return name, f"case {seed}:{i}: the harness raised {type(e).__name__}: {e}"
    return name, None


def run_chunk(args) -> tuple[dict, list[str]]:
    seed, start, stop, targets = args
    import matgrad

    matgrad.set_num_threads(1)  # the processes are the parallelism
    counts: dict[str, int] = {}
    found: list[str] = []
    for i in range(start, stop):
        name, problem = run_case(seed, i, targets)
        counts[name] = counts.get(name, 0) + 1
        if problem:
            found.append(problem)
    return counts, found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--target", action="append", choices=sorted(fuzzing.TARGETS))
    p.add_argument("--replay", metavar="SEED:I", help="run one case and print its outcome")
    args = p.parse_args(argv)
    targets = args.target or sorted(fuzzing.TARGETS)
    if args.replay:
        seed, i = map(int, args.replay.split(":"))
        name, problem = run_case(seed, i, targets)
        print(name, problem or "agrees")
        return 1 if problem else 0

    chunk = 2_000
    work = [(args.seed, s, min(s + chunk, args.cases), targets) for s in range(0, args.cases, chunk)]
    totals: dict[str, int] = {}
    found: list[str] = []
    began = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for n, (counts, problems) in enumerate(pool.map(run_chunk, work), 1):
            for k, v in counts.items():
                totals[k] = totals.get(k, 0) + v
            found += problems
            if n % 25 == 0 or n == len(work):
                done = sum(totals.values())
                print(f"{done} cases, {len(found)} disagreements, {time.perf_counter() - began:.0f} s", flush=True)
    elapsed = time.perf_counter() - began
    print(f"seed {args.seed}: {sum(totals.values())} cases in {elapsed:.0f} s on {args.jobs} processes")
    for k in sorted(totals):
        print(f"  {k}: {totals[k]}")
    for problem in found[:50]:
        print(problem)
    print(f"{len(found)} disagreements")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
