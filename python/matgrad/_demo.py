"""``python -m matgrad demo``: train a two-layer MLP on handwritten digits with matgrad.

The network is :func:`matgrad.nn.mlp2_loss_and_grads` (ReLU hidden layer, softmax
cross-entropy, L2 penalty), trained by minibatch SGD on scikit-learn's digits data set
(1797 8x8 images, shipped inside scikit-learn: nothing is downloaded). With torch installed,
the same training is repeated with torch autograd from the same initial weights and the
same minibatch order, and the two loss curves and wall times are compared.

Exit status: 0 when the held-out accuracy reaches 95%, 1 when it does not, 2 on bad usage
or when scikit-learn is missing.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .__main__ import _positive_int

EXIT_OK, EXIT_LOW_ACCURACY, EXIT_USAGE = 0, 1, 2
TARGET_ACCURACY = 0.95
TEST_FRACTION = 0.2


def _float_at_least(lo: float, strict: bool):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not np.isfinite(v) or v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {lo:g}, got {text}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m matgrad demo",
        description="Train a 2-layer ReLU MLP (softmax cross-entropy + L2) on scikit-learn's "
                    "handwritten digits with matgrad, then the same training with torch "
                    "(when installed) from the same initial weights and minibatch order, "
                    "and compare the loss curves and wall times. Needs scikit-learn: "
                    "pip install 'matgrad[demo]'.",
        epilog="exit status: 0 held-out accuracy >= 95%, 1 below 95%, 2 bad usage or "
               "scikit-learn missing.")
    p.add_argument("--epochs", type=_positive_int, default=25, help="epochs (default 25)")
    p.add_argument("--hidden", type=_positive_int, default=128,
                   help="hidden units H (default 128)")
    p.add_argument("--lr", type=_float_at_least(0.0, True), default=0.2,
                   help="SGD learning rate (default 0.2)")
    p.add_argument("--reg", type=_float_at_least(0.0, False), default=1e-4,
                   help="L2 strength: the loss adds reg*(sum W1^2 + sum W2^2) (default 1e-4)")
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="minibatch size (default 64)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the train/test split, the initial weights and the "
                        "minibatch order (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point type (default float32)")
    p.add_argument("--precision", choices=("highest", "high", "medium"), default="highest",
                   help="how float32 products are computed (matgrad.matmul's precision=); "
                        "other than highest, the run at highest is timed beside it")
    p.add_argument("--dask", action="store_true",
                   help="train data-parallel with matgrad.dask: each minibatch cut into one shard "
                        "per worker of a dask.distributed cluster (pip install 'matgrad[dask]'); "
                        "the single-process training runs beside it and the loss curves are compared")
    p.add_argument("--workers", type=_positive_int, default=2,
                   help="with --dask: workers of the LocalCluster started for the run, one "
                        "thread each (default 2)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="with --dask: join this scheduler (e.g. tcp://host:8786) instead of "
                        "starting a LocalCluster")
    p.add_argument("--no-torch", dest="use_torch", action="store_false",
                   help="do not repeat the training with torch")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")
    return p


# --------------------------------------------------------------------------
# progress bar: tqdm when importable, else a minimal one on stderr
# --------------------------------------------------------------------------


class _SimpleBar:
    """A text progress bar on stderr (redrawn at most every 0.1 s)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.n = 0
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        width = 30
        frac = self.n / self.total if self.total else 1.0
        filled = int(round(width * frac))
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.n}/{self.total} {now - self._t0:5.1f}s")
        sys.stderr.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()
            self._drawn = False

    def update(self, k: int = 1) -> None:
        self.n += k
        self._draw(force=self.n == self.total)

    def write(self, line: str) -> None:
        self._clear()
        print(line, flush=True)
        self._draw(force=True)

    def close(self) -> None:
        self._clear()


def _progress(total: int, desc: str, enabled: bool):
    if enabled:
        try:
            from tqdm.auto import tqdm  # noqa: PLC0415
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit="step", leave=False, file=sys.stderr,
                        dynamic_ncols=True)
    return _SimpleBar(total, desc, enabled)


def _bar_write(bar, line: str) -> None:
    if isinstance(bar, _SimpleBar):
        bar.write(line)
    else:
        bar.write(line, file=sys.stdout)
        sys.stdout.flush()


# --------------------------------------------------------------------------
# data and training
# --------------------------------------------------------------------------


def load_data(seed: int, dtype: np.dtype):
    """The digits split 80/20 by ``seed``, standardized with the training set's statistics."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    X, y = digits.data.astype(np.float64), digits.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(TEST_FRACTION * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    mean = X[train].mean(axis=0)
    std = X[train].std(axis=0)
    std[std == 0] = 1.0  # the always-blank corner pixels
    X = (X - mean) / std
    return (np.ascontiguousarray(X[train], dtype), y[train],
            np.ascontiguousarray(X[test], dtype), y[test])


def _batch_orders(n: int, epochs: int, batch: int, seed: int) -> list[list[np.ndarray]]:
    """The minibatches of every epoch (index arrays), shared by both trainings."""
    rng = np.random.default_rng([seed, 1])
    orders = []
    for _ in range(epochs):
        perm = rng.permutation(n)
        orders.append([perm[i:i + batch] for i in range(0, n, batch)])
    return orders


def _dask_step(shards: int):
    """The training step of matgrad.dask: the minibatch cut into ``shards`` row chunks."""
    import dask.array as da  # noqa: PLC0415

    from .dask import mlp2_loss_and_grads  # noqa: PLC0415

    def step(params, X, y, reg, precision):
        rows = -(-len(y) // shards)
        return mlp2_loss_and_grads(params, da.from_array(X, chunks=(rows, -1)), da.from_array(y, chunks=rows),
                                   reg, precision=precision)

    return step


def train_matgrad(params, data, orders, lr, reg, progress, precision="highest", step=None, name="matgrad"):
    from .nn import mlp2_loss_and_grads  # noqa: PLC0415

    step = step or (lambda p, X, y, r, prec: mlp2_loss_and_grads(p, X, y, r, precision=prec))
    Xtr, ytr, Xte, yte = data
    params = {k: v.copy() for k, v in params.items()}
    losses, accs, train_time = [], [], 0.0
    bar = _progress(sum(map(len, orders)), name, progress)
    try:
        for epoch, batches in enumerate(orders, 1):
            total = 0.0
            t0 = time.perf_counter()
            for idx in batches:
                loss, grads = step(params, Xtr[idx], ytr[idx], reg, precision)
                for k, g in grads.items():
                    g *= lr
                    params[k] -= g
                total += loss * len(idx)
                bar.update(1)
            train_time += time.perf_counter() - t0
            losses.append(total / len(ytr))
            scores = mlp2_loss_and_grads(params, Xte, precision=precision)
            accs.append(float(np.mean(scores.argmax(axis=1) == yte)))
            _bar_write(bar, f"  epoch {epoch:3d}/{len(orders)}  loss {losses[-1]:.5f}  "
                            f"held-out accuracy {100 * accs[-1]:6.2f}%")
    finally:
        bar.close()
    return losses, accs, train_time


def train_torch(torch, params, data, orders, lr, reg, progress):
    F = torch.nn.functional
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in data)
    p = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params.items()}
    W1, b1, W2, b2 = p["W1"], p["b1"], p["W2"], p["b2"]
    idx_t = [[torch.from_numpy(idx) for idx in batches] for batches in orders]
    losses, accs, train_time = [], [], 0.0
    bar = _progress(sum(map(len, orders)), "torch", progress)
    try:
        for batches in idx_t:
            total = 0.0
            t0 = time.perf_counter()
            for idx in batches:
                xb, yb = Xtr[idx], ytr[idx]
                scores = torch.addmm(b2, F.relu(torch.addmm(b1, xb, W1)), W2)
                loss = F.cross_entropy(scores, yb)
                if reg:
                    loss = loss + reg * (W1.pow(2).sum() + W2.pow(2).sum())
                loss.backward()
                with torch.no_grad():
                    for t in (W1, b1, W2, b2):
                        t.sub_(t.grad, alpha=lr)
                        t.grad = None
                total += loss.item() * len(idx)
                bar.update(1)
            train_time += time.perf_counter() - t0
            losses.append(total / len(ytr))
            with torch.no_grad():
                scores = torch.addmm(b2, F.relu(torch.addmm(b1, Xte, W1)), W2)
                accs.append(float((scores.argmax(dim=1) == yte).double().mean()))
    finally:
        bar.close()
    return losses, accs, train_time


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) or bad usage (2): a return code, not an exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE

    try:
        import sklearn.datasets  # noqa: F401, PLC0415
    except ImportError:
        print("matgrad demo: scikit-learn is required for the digits data set; install it "
              "with: pip install 'matgrad[demo]'", file=sys.stderr)
        return EXIT_USAGE

    import matgrad  # noqa: PLC0415
    from .nn import init_mlp2_params  # noqa: PLC0415

    dtype = np.dtype(args.dtype)
    data = load_data(args.seed, dtype)
    Xtr, ytr, Xte, _ = data
    d, c = Xtr.shape[1], 10
    params = init_mlp2_params(d, args.hidden, c, dtype=dtype, seed=args.seed)
    orders = _batch_orders(len(ytr), args.epochs, args.batch_size, args.seed)
    threads = matgrad.get_num_threads()

    print(f"matgrad {matgrad.__version__} ({matgrad.simd_kernel()}, {threads} threads): "
          f"MLP {d}-{args.hidden}-{c} (ReLU, softmax cross-entropy, L2 {args.reg:g}) on "
          f"sklearn digits, {len(ytr)} train / {len(Xte)} held-out images, {dtype.name}")
    print(f"SGD: {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, "
          f"seed {args.seed}", flush=True)
    if args.precision != "highest" and dtype != np.float32:
        print("matgrad demo: --precision other than highest needs --dtype float32", file=sys.stderr)
        return EXIT_USAGE
    if args.dask:
        return _run_dask(args, params, data, orders)
    m_losses, m_accs, m_time = train_matgrad(params, data, orders, args.lr, args.reg,
                                             args.progress, args.precision)
    final_acc = m_accs[-1]
    print(f"matgrad: final loss {m_losses[-1]:.5f}, held-out accuracy {100 * final_acc:.2f}%, "
          f"training time {m_time:.3f} s (precision {args.precision})", flush=True)
    if args.precision != "highest":
        h_losses, h_accs, h_time = train_matgrad(params, data, orders, args.lr, args.reg,
                                                 args.progress, "highest")
        print(f"matgrad at precision highest: final loss {h_losses[-1]:.5f}, held-out accuracy "
              f"{100 * h_accs[-1]:.2f}%, training time {h_time:.3f} s "
              f"(highest/{args.precision} = {h_time / m_time:.2f}x)", flush=True)

    if args.use_torch:
        try:
            import torch  # noqa: PLC0415
        except ImportError:
            torch = None
            print("torch: not installed, comparison skipped (pip install torch)")
        if torch is not None:
            torch.set_num_threads(threads)
            t_losses, t_accs, t_time = train_torch(torch, params, data, orders, args.lr,
                                                   args.reg, args.progress)
            diffs = np.abs(np.asarray(m_losses) - np.asarray(t_losses))
            print(f"torch {torch.__version__} ({threads} threads), same initial weights and "
                  f"minibatch order:")
            print("  epoch   matgrad loss    torch loss    |difference|")
            for e, (ml, tl, df) in enumerate(zip(m_losses, t_losses, diffs), 1):
                print(f"  {e:5d}   {ml:12.7f}  {tl:12.7f}    {df:.2e}")
            print(f"torch: final loss {t_losses[-1]:.5f}, held-out accuracy "
                  f"{100 * t_accs[-1]:.2f}%, training time {t_time:.3f} s")
            print(f"loss curves: max |matgrad - torch| over {len(diffs)} epochs = "
                  f"{diffs.max():.3g}")
            print(f"training time: matgrad {m_time:.3f} s, torch {t_time:.3f} s "
                  f"(torch/matgrad = {t_time / m_time:.2f}x)")

    if final_acc < TARGET_ACCURACY:
        print(f"FAILED: held-out accuracy {100 * final_acc:.2f}% < "
              f"{100 * TARGET_ACCURACY:.0f}%", file=sys.stderr)
        return EXIT_LOW_ACCURACY
    print(f"OK: held-out accuracy {100 * final_acc:.2f}% >= {100 * TARGET_ACCURACY:.0f}%")
    return EXIT_OK


def _run_dask(args, params, data, orders) -> int:
    """--dask: the training on a dask.distributed cluster, then in this process, compared."""
    try:
        from distributed import Client, LocalCluster  # noqa: PLC0415
    except ImportError:
        print("matgrad demo: --dask needs dask and distributed: pip install 'matgrad[dask]'", file=sys.stderr)
        return EXIT_USAGE
    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
    try:
        workers = len(client.scheduler_info()["workers"])
        print(f"dask: {workers} workers at {client.scheduler.address}; each minibatch cut into "
              f"{workers} shards, one task each, gradients summed by a tree", flush=True)
        d_losses, d_accs, d_time = train_matgrad(params, data, orders, args.lr, args.reg, args.progress,
                                                 args.precision, step=_dask_step(workers), name="matgrad.dask")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"matgrad.dask: final loss {d_losses[-1]:.5f}, held-out accuracy {100 * d_accs[-1]:.2f}%, "
          f"training time {d_time:.3f} s", flush=True)
    m_losses, _, m_time = train_matgrad(params, data, orders, args.lr, args.reg, args.progress, args.precision)
    diffs = np.abs(np.asarray(d_losses) - np.asarray(m_losses))
    print("  epoch   dask loss      single-process loss    |difference|")
    for e, (dl, ml, df) in enumerate(zip(d_losses, m_losses, diffs), 1):
        print(f"  {e:5d}   {dl:12.7f}  {ml:12.7f}           {df:.2e}")
    print(f"loss curves: max |dask - single process| over {len(diffs)} epochs = {diffs.max():.3g} "
          f"(single process {m_time:.3f} s)")
    if d_accs[-1] < TARGET_ACCURACY:
        print(f"FAILED: held-out accuracy {100 * d_accs[-1]:.2f}% < {100 * TARGET_ACCURACY:.0f}%", file=sys.stderr)
        return EXIT_LOW_ACCURACY
    print(f"OK: held-out accuracy {100 * d_accs[-1]:.2f}% >= {100 * TARGET_ACCURACY:.0f}%")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
