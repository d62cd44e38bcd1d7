"""The bench's interleaved timer: implementations alternate, and each sample starts only after
a settle pause, so threads another library leaves spinning do not overlap it, and after
untimed calls, so no sample carries the first calls' cost after the pause or after another
library."""

from __future__ import annotations

import time

from matgrad import _bench


def test_samples_alternate_and_each_follows_a_pause():
    events: list[tuple[str, float, float]] = []

    def impl(name):
        def call():
            t = time.perf_counter()
            time.sleep(0.001)
            events.append((name, t, time.perf_counter()))
        return call

    settle = 0.01
    # (warm=0: one untimed call per sample, so the calls can be counted)
    out = _bench.time_interleaved({"a": impl("a"), "b": impl("b")}, repeats=3,
                                  min_sample=0.001, settle=settle, warm=0.0)
    assert set(out) == {"a", "b"} and all(r["repeats"] == 3 for r in out.values())
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
    # Like OpenBLAS's idle workers (~110 ms of spinning after each call): "a" leaves a
    # thread busy for SPIN_S after it returns; "b"'s sample must not start before it stops.
    import threading

    spin_s = 0.06
    spin_ends: list[float] = []
    starts: list[tuple[str, float]] = []

    def spin():
        end = time.perf_counter() + spin_s
        while time.perf_counter() < end:
            pass
        spin_ends.append(time.perf_counter())

    def a():
        starts.append(("a", time.perf_counter()))
        threading.Thread(target=spin).start()

    def b():
        starts.append(("b", time.perf_counter()))

    _bench.time_interleaved({"a": a, "b": b}, repeats=3, min_sample=0.0, settle=0.005, warm=0.0)
    timed_b = [t for name, t in starts[-12:] if name == "b"]  # (an untimed call + 1) x 3
    assert len(timed_b) == 6
    for t in timed_b:
        before = [e for e in spin_ends if e <= t]
        # Every spinner started before this sample had stopped before it.
        spinners_started = sum(1 for name, s in starts if name == "a" and s < t)
        assert len(before) == spinners_started, "a sample started while a thread still spun"


def test_each_sample_follows_an_untimed_call():
    # A call that is slow only when it follows the pause (as a real first call after an idle
    # spell is) must not show in the timed samples.
    last = {"t": 0.0}

    def impl():
        if time.perf_counter() - last["t"] > 0.004:  # the first call after a pause
            time.sleep(0.02)
        last["t"] = time.perf_counter()

    out = _bench.time_interleaved({"a": impl, "b": impl}, repeats=3, min_sample=0.0, settle=0.01)
    assert all(r["max_s"] < 0.01 for r in out.values()), out


def test_calibration_waits_for_threads_left_spinning():
    # A thread left spinning by whatever ran before (here it holds the GIL, so a 1 ms call
    # takes up to 5 ms more while it spins) must not make the calibration count too few calls.
    import threading

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    threading.Thread(target=spin, args=(0.1,)).start()
    out = _bench.time_interleaved({"b": lambda: time.sleep(0.001)}, repeats=1,
                                  min_sample=0.02, settle=0.005)
    # ~18 calls at ~1.1 ms a call (8 even at 2.5 ms); ~4 if calibrated while it spun.
    assert out["b"]["loops"] >= 8, out


def test_samples_follow_a_warm_up_after_another_library():
    # Calls slow for a while after another implementation ran, as the next library's first
    # calls after NumPy's GEMM were (~10 ms), must not show in the timed samples: one untimed
    # call does not cover it (a 4 ms call inside a 12 ms window), the time-based warm-up does.
    state = {"last": None, "since": 0.0}

    def make(name):
        def call():
            now = time.perf_counter()
            if state["last"] != name:
                state["last"], state["since"] = name, now
            time.sleep(0.004 if now - state["since"] < 0.012 else 0.0005)
        return call

    out = _bench.time_interleaved({"a": make("a"), "b": make("b")}, repeats=3,
                                  min_sample=0.003, settle=0.005)
    assert all(r["max_s"] < 0.002 for r in out.values()), out
