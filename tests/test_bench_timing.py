"""The bench's interleaved timer: implementations alternate, and each sample starts only after
a pause that outlasts the threads another library left spinning, and after untimed calls, so
no sample carries the first calls' cost after the pause or after another library.

Run on a simulated clock (the host is shared and noisy, and its wall clock would make these
tests flaky): calls and spinning threads spend simulated time, so every figure is exact.
"""

from __future__ import annotations

import pytest

from matgrad.bench.timing import time_interleaved


class SimClock:
    """Simulated wall and CPU time. ``work`` is the caller computing; ``spin`` leaves another
    thread of the process busy for a while, as OpenBLAS's idle workers are after a call."""

    def __init__(self) -> None:
        self.t = 0.0
        self.busy = 0.0
        self.spinners: list[tuple[float, float]] = []

    def now(self) -> float:
        return self.t

    def cpu(self) -> float:
        spun = sum(max(0.0, min(end, self.t) - start) for start, end in self.spinners)
        return self.busy + spun

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def work(self, seconds: float) -> None:
        self.t += seconds
        self.busy += seconds

    def spin(self, seconds: float) -> None:
        self.spinners.append((self.t, self.t + seconds))

    def spinning(self) -> bool:
        return any(start <= self.t < end for start, end in self.spinners)


def test_samples_alternate_and_each_follows_a_pause():
    clock = SimClock()
    events: list[tuple[str, float, float]] = []

    def impl(name):
        def call():
            start = clock.now()
            clock.work(0.001)
            events.append((name, start, clock.now()))
        return call

    settle = 0.01
    # (warm=0: one untimed call per sample, so the calls can be counted)
    out = time_interleaved({"a": impl("a"), "b": impl("b")}, repeats=3, min_sample=0.001,
                           settle=settle, warm=0.0, clock=clock)
    assert set(out) == {"a", "b"} and all(r["repeats"] == 3 for r in out.values())
    assert all(r["median_s"] == pytest.approx(0.001) for r in out.values()), out
    # The timed part: after the calibration calls, runs of one implementation alternate,
    # each an untimed call and then the timed ones.
    timed = events[-sum(r["loops"] + 1 for r in out.values()) * 3:]
    runs = [timed[0]]
    for ev in timed[1:]:
        if ev[0] != runs[-1][0]:
            runs.append(ev)
            # This sample's first call began at least `settle` after the previous call ended.
            prev_end = max(e[2] for e in timed if e[2] <= ev[1])
            assert ev[1] - prev_end >= settle
    assert [r[0] for r in runs] == ["a", "b"] * 3


def test_the_pause_outlasts_threads_left_spinning():
    # "a" leaves a thread busy for 60 ms after it returns (as OpenBLAS's idle workers spin
    # ~110 ms); none of "b"'s calls may start while it spins, and "b" then times its own speed.
    clock = SimClock()
    b_starts: list[float] = []

    def a():
        clock.work(0.001)
        clock.spin(0.06)

    def b():
        b_starts.append(clock.now())
        clock.work(0.003 if clock.spinning() else 0.001)

    out = time_interleaved({"a": a, "b": b}, repeats=3, min_sample=0.0, settle=0.005,
                           warm=0.0, clock=clock)
    assert b_starts and not any(start < end and t >= start and t < end
                                for t in b_starts for start, end in clock.spinners)
    assert out["b"]["max_s"] == pytest.approx(0.001), out


def test_without_the_quiet_wait_the_spinner_would_show():
    # The same pair with the pause capped at the fixed settle time: b's samples overlap the
    # spinner and read slow, which is what the quiet wait above prevents.
    clock = SimClock()

    def a():
        clock.work(0.001)
        clock.spin(0.06)

    def b():
        clock.work(0.003 if clock.spinning() else 0.001)

    out = time_interleaved({"a": a, "b": b}, repeats=3, min_sample=0.0, settle=0.005,
                           settle_max=0.005, warm=0.0, clock=clock)
    assert out["b"]["max_s"] > 0.0011, out


def test_each_sample_follows_an_untimed_call():
    # A call that is slow only when it follows the pause (as a real first call after an idle
    # spell is) must not show in the timed samples.
    clock = SimClock()
    last = {"t": -1.0}

    def impl():
        clock.work(0.02 if clock.now() - last["t"] > 0.004 else 0.001)
        last["t"] = clock.now()

    out = time_interleaved({"a": impl, "b": impl}, repeats=3, min_sample=0.0, settle=0.01,
                           clock=clock)
    assert all(r["max_s"] == pytest.approx(0.001) for r in out.values()), out


def test_calibration_waits_for_threads_left_spinning():
    # A thread left spinning by whatever ran before slows each call 5x while it spins: the
    # calibration must wait for it, or it would count ~4 calls per sample instead of 20.
    clock = SimClock()
    clock.spin(0.1)

    def b():
        clock.work(0.005 if clock.spinning() else 0.001)

    out = time_interleaved({"b": b}, repeats=1, min_sample=0.02, settle=0.005, clock=clock)
    assert out["b"]["loops"] == 20, out


def test_samples_follow_a_warm_up_after_another_library():
    # Calls slow for 12 ms after another implementation ran, as the next library's first
    # calls after NumPy's GEMM were (~10 ms), must not show in the timed samples: one untimed
    # call does not cover it (a 4 ms call inside a 12 ms window), the time-based warm-up does.
    clock = SimClock()
    state = {"last": None, "since": 0.0}

    def make(name):
        def call():
            if state["last"] != name:
                state["last"], state["since"] = name, clock.now()
            clock.work(0.004 if clock.now() - state["since"] < 0.012 else 0.0005)
        return call

    out = time_interleaved({"a": make("a"), "b": make("b")}, repeats=3, min_sample=0.003,
                           settle=0.005, clock=clock)
    assert all(r["max_s"] == pytest.approx(0.0005) for r in out.values()), out
    one_call = time_interleaved({"a": make("a"), "b": make("b")}, repeats=3, min_sample=0.003,
                                settle=0.005, warm=0.0, clock=clock)
    assert all(r["max_s"] > 0.0006 for r in one_call.values()), one_call
