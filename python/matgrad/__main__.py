"""``python -m matgrad``: benchmark, self-check and demo.

The logic lives in :mod:`matgrad.bench` (bench, check) and :mod:`matgrad._demo`; this module
only parses arguments.
"""

from __future__ import annotations

import argparse
import sys

SUBCOMMANDS = ("bench", "check", "demo")

DESCRIPTION = """\
matgrad: fast matmul and linear layer (forward and backward) for NumPy arrays.

subcommands (default: bench):
  bench   check matgrad's results against NumPy, then time matmul, transposed
          and small/batched matmul, linear and linear_backward (both weight
          layouts), matmul_backward and a 2-layer MLP training step, against
          NumPy and torch (CPU) when torch is installed.  Prints a table of
          median times, GFLOP/s and speed ratios (baseline time / matgrad
          time: >1 means matgrad is faster).  Exits 1 if any result is wrong.
  check   verify matgrad against NumPy (and torch autograd when installed) on
          a handful of random cases and print the build's version, SIMD
          kernel, thread count and GPU availability.  Exits 1 on a mismatch.
  demo    run the demo (matgrad._demo), passing the remaining arguments on.

Run 'python -m matgrad SUBCOMMAND --help' for the options of each.
"""

BENCH_EPILOG = """\
examples:
  python -m matgrad bench --quick
  python -m matgrad bench --threads 1 --json results.json --plot results.png
  python -m matgrad bench --filter 'linear' --repeats 5

exit status: 0 all checks passed, 1 a correctness check failed,
2 bad usage (e.g. --plot without matplotlib, --device gpu without a GPU)."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m matgrad", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{bench,check,demo}")

    b = sub.add_parser(
        "bench", help="check, then time matgrad against NumPy and torch",
        description="Check matgrad's results, then benchmark it against NumPy and torch "
                    "(CPU). Implementations are interleaved within each repeat; the "
                    "median of the repeats is reported.",
        epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--quick", action="store_true",
                   help="fewer sizes (n <= 1024, two linear shapes), 3 repeats and "
                        ">= 5 ms samples: about a minute on 2 cores")
    b.add_argument("--json", metavar="PATH", dest="json_path",
                   help="write machine-readable results (records + metadata) to PATH")
    b.add_argument("--plot", metavar="PATH.png", dest="plot_path",
                   help="plot GFLOP/s per size and implementation to PATH.png "
                        "(needs matplotlib: pip install 'matgrad[plot]')")
    b.add_argument("--threads", metavar="N", type=_positive_int,
                   help="threads for matgrad (matgrad.set_num_threads), torch "
                        "(torch.set_num_threads) and, with threadpoolctl, NumPy's BLAS; "
                        "default: matgrad's current setting")
    b.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="benchmark the CPU kernels (default) or matgrad.gpu "
                        "(exits 2 if no GPU backend is usable)")
    b.add_argument("--no-torch", dest="use_torch", action="store_false",
                   help="do not compare against torch even when it is installed")
    b.add_argument("--filter", metavar="REGEX", dest="filter_re",
                   help="only run cases whose name matches REGEX (e.g. 'float32 n=1024')")
    b.add_argument("--repeats", metavar="N", type=_positive_int,
                   help="timed repeats per case (default 7, or 3 with --quick)")
    b.add_argument("--min-time", metavar="SECONDS", type=_positive_float,
                   help="minimum duration of one timed sample (default 0.02, or 0.005 "
                        "with --quick)")
    b.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")
    b.add_argument("--dask", action="store_true",
                   help="instead: matgrad.dask.matmul against dask.array.matmul on a LocalCluster "
                        "of 2 one-thread workers, n = 8192 and 16384 in 2048x2048 chunks (--quick: "
                        "n = 4096); wall time, tasks, peak memory (pip install 'matgrad[dask]')")

    c = sub.add_parser(
        "check", help="verify matgrad against NumPy/torch and print build info",
        description="Verify matgrad against NumPy (and torch autograd when installed) on "
                    "random cases and print version, SIMD kernel, threads and GPU "
                    "availability. Exits 1 on any mismatch.")
    c.add_argument("--threads", metavar="N", type=_positive_int,
                   help="run the checks with N matgrad threads")
    c.add_argument("--no-torch", dest="use_torch", action="store_false",
                   help="do not compare against torch autograd")

    sub.add_parser(
        "demo", help="run the demo (arguments are passed on to it)", add_help=False,
        description="Run matgrad's demo; every argument after 'demo' is passed to it.")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `demo` takes whatever follows it verbatim (the demo has its own parser).
    if argv and argv[0] == "demo":
        from matgrad import _demo  # noqa: PLC0415

        return int(_demo.main(argv[1:]) or 0)
    # bench is the default subcommand: `python -m matgrad --quick` == `... bench --quick`.
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["bench", *argv]

    args = build_parser().parse_args(argv)
    if args.version:
        import matgrad  # noqa: PLC0415

        print(getattr(matgrad, "__version__", "unknown"))
        return 0
    from matgrad import bench  # noqa: PLC0415

    if args.command == "check":
        return bench.run_check(use_torch=args.use_torch, threads=args.threads)
    if args.dask:
        from matgrad.bench.cluster import run_dask_bench  # noqa: PLC0415

        return run_dask_bench(quick=args.quick, repeats=args.repeats, json_path=args.json_path,
                              filter_re=args.filter_re)
    return bench.run_bench(
        quick=args.quick, json_path=args.json_path, plot_path=args.plot_path,
        threads=args.threads, device=args.device, use_torch=args.use_torch,
        filter_re=args.filter_re, repeats=args.repeats, min_time=args.min_time,
        progress=args.progress)


if __name__ == "__main__":
    sys.exit(main())
