"""The bench's interleaved timer: implementations alternate, and each sample starts only after
a settle pause, so threads another library leaves spinning do not overlap it."""

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
    out = _bench.time_interleaved({"a": impl("a"), "b": impl("b")}, repeats=3,
                                  min_sample=0.001, settle=settle)
    assert set(out) == {"a", "b"} and all(r["repeats"] == 3 for r in out.values())
    # The timed part: after the calibration calls, runs of one implementation alternate.
    timed = events[-sum(r["loops"] for r in out.values()) * 3:]
    runs = [timed[0]]
    for ev in timed[1:]:
        if ev[0] != runs[-1][0]:
            runs.append(ev)
            # This sample's first call began at least `settle` after the previous call ended.
            prev_end = max(e[2] for e in timed if e[2] <= ev[1])
            assert ev[1] - prev_end >= settle
    assert [r[0] for r in runs] == ["a", "b"] * 3
