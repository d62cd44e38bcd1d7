"""The benchmark and self-check behind ``python -m matgrad`` (nothing here is imported by
``import matgrad``).

- :mod:`.timing`: the interleaved timer (pauses, warm-up, calibration, medians).
- :mod:`.reference`: the operations timed, as matgrad/NumPy/torch implementations over the
  same inputs; the asv suites in ``benchmarks/`` are built from it too.
- :mod:`.cases`: the bench's cases (shapes, FLOP counts, the check each runs first).
- :mod:`.compare`: judging a result against its reference.
- :mod:`.report`: table, JSON and plot.
- :mod:`.env`: where a run ran (metadata) and the threads it runs on.
- :mod:`.driver`: ``run_bench``; :mod:`.check`: ``run_check``.
"""

from .check import run_check
from .driver import run_bench
from .outcomes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["run_bench", "run_check", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]
