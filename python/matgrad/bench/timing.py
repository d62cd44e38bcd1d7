"""The interleaved timer: implementations alternate within each repeat, each sample after a
pause that outlasts the threads the previous library left spinning and after untimed calls,
and the figure reported is the median of the repeats.

Why each rule exists is measured and recorded in docs/measurements.md ("bench fairness").
The clock is a parameter, so the rules are tested with a simulated one, not the host's.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Any, Callable

# The pause before each sample lasts at least SETTLE_S and then until the process has used
# under QUIET_CPU of a core over a QUIET_WINDOW_S window, at most SETTLE_MAX_S: libraries
# leave idle threads spinning after a call (OpenBLAS's ~110 ms, torch's ~9 ms), which would
# take a core from whatever is timed next. A pause leaves each library as it is, unlike
# OMP_WAIT_POLICY=PASSIVE or OPENBLAS_THREAD_TIMEOUT, which change it within its own samples.
SETTLE_S = 0.02
QUIET_WINDOW_S = 0.005
QUIET_CPU = 0.1
SETTLE_MAX_S = 0.5

# Untimed calls after the pause, for at least this long (and at least one call): the first
# call after a pause, and the first few after another library's GEMM, run slow.
WARM_S = 0.02


class Clock:
    """Wall time, process CPU time and sleep: the host's by default (tests pass a simulated
    one)."""

    now = staticmethod(time.perf_counter)
    cpu = staticmethod(time.process_time)
    sleep = staticmethod(time.sleep)


HOST_CLOCK = Clock()


def time_calls(fn: Callable[[], Any], n: int, clock: Clock = HOST_CLOCK) -> float:
    """Seconds taken by ``n`` calls of ``fn`` in a row."""
    t0 = clock.now()
    for _ in range(n):
        fn()
    return clock.now() - t0


def wait_until_quiet(min_s: float = SETTLE_S, max_s: float = SETTLE_MAX_S,
                     clock: Clock = HOST_CLOCK) -> float:
    """Sleeps ``min_s``, then until no thread of this process spins (or ``max_s`` in all);
    returns the seconds slept."""
    start = clock.now()
    clock.sleep(min_s)
    while clock.now() - start < max_s:
        cpu0, wall0 = clock.cpu(), clock.now()
        clock.sleep(QUIET_WINDOW_S)
        if clock.cpu() - cpu0 <= QUIET_CPU * (clock.now() - wall0):
            break
    return clock.now() - start


def warm_up(fn: Callable[[], Any], seconds: float, clock: Clock = HOST_CLOCK) -> None:
    """Calls ``fn`` once, then again until ``seconds`` have passed (see :data:`WARM_S`)."""
    end = clock.now() + seconds
    fn()
    while clock.now() < end:
        fn()


def calibrate(fn: Callable[[], Any], min_sample: float, settle: float,
              settle_max: float = SETTLE_MAX_S, clock: Clock = HOST_CLOCK) -> tuple[int, float]:
    """Warms ``fn`` up and finds how many calls make one sample >= ``min_sample``; returns
    (calls, seconds per call).

    It starts after the same pause as the samples (threads still spinning from the previous
    case would make the first implementation's calibration slow, and its samples short), and
    takes the least of three timings, as a slow moment would mean too few calls."""
    wait_until_quiet(settle, settle_max, clock)
    fn()  # first-call costs: allocation, thread pool start, caches
    n = 1
    while True:
        dt = time_calls(fn, n, clock)
        if dt >= min_sample * 0.2 or n >= 1 << 20:
            break
        n *= 4 if dt < min_sample * 0.02 else 2
    dt = min(dt, time_calls(fn, n, clock), time_calls(fn, n, clock))
    per_call = dt / n
    return max(1, math.ceil(min_sample / max(per_call, 1e-9))), per_call


def time_interleaved(impls: dict[str, Callable[[], Any]], *, repeats: int,
                     min_sample: float, slow_call: float = 0.5,
                     settle: float = SETTLE_S, settle_max: float = SETTLE_MAX_S,
                     warm: float = WARM_S, clock: Clock = HOST_CLOCK) -> dict[str, dict]:
    """Median seconds per call of each implementation, interleaved per repeat: before each
    sample a pause of at least ``settle`` that lasts until no thread spins (at most
    ``settle_max``), then untimed calls for ``warm`` seconds (at least one)."""
    loops: dict[str, int] = {}
    per_call: dict[str, float] = {}
    for name, fn in impls.items():
        loops[name], per_call[name] = calibrate(fn, min_sample, settle, settle_max, clock)
    if max(per_call.values()) > slow_call:  # a few seconds per sample is enough
        repeats = min(repeats, 3)
    samples: dict[str, list[float]] = {name: [] for name in impls}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in impls.items():
                n = loops[name]
                wait_until_quiet(settle, settle_max, clock)
                warm_up(fn, warm, clock)
                samples[name].append(time_calls(fn, n, clock) / n)
    finally:
        if gc_was:
            gc.enable()
    return {
        name: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "max_s": max(s),
            "repeats": len(s),
            "loops": loops[name],
        }
        for name, s in samples.items()
    }
