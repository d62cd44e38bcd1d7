"""matgrad on dask arrays: the same functions, each block computed by matgrad on the workers.

``pip install 'matgrad[dask]'``. Works on any dask scheduler (a ``distributed.Client``'s
cluster, the threaded or the synchronous one); the graphs are built with dask's public API
(``blockwise``, ``map_blocks``, ``to_delayed``), so they persist, fuse and run like any other.

- :func:`matmul`: :func:`numpy.matmul`'s rules (matrices, stacks, 1-D operands). One task per
  output tile reads the row panel ``A[i, :]`` and the column panel ``B[:, j]`` and sums the
  contracted dimension into that one tile in place (a GEMM with beta = 1 per k block), where
  dask.array.matmul makes a task and a partial tile per (i, k, j) and adds them up. Panels
  larger than ``panel_bytes`` are cut into groups of k blocks whose partial tiles a tree sums.
- :func:`linear` / :func:`linear_backward`: x chunked by rows, the weight one block of the
  graph (fetched by each worker once, not copied into every task); grad_weight and grad_bias
  summed over the row chunks by a tree.
- :func:`mlp2_loss_and_grads`: data-parallel, one task per shard runs the core's step, the
  gradients summed with weights n_i/N by a tree; returns NumPy values.

Threads: a dask worker already runs one task per worker thread, so inside a
``distributed`` worker matgrad computes on one thread per task (set once per worker process,
unless ``MATGRAD_NUM_THREADS`` is set in the worker's environment); :class:`MatgradThreads`
is a worker plugin that sets another count.
"""

from __future__ import annotations

import os
from functools import partial

import dask
import dask.array as da
import numpy as np

from . import _matgrad
from ._arrays import F32, F64, float_dtype, kernel_ready
from ._grad import linear as _np_linear
from ._matmul import matmul as _np_matmul
from ._shapes import check_bias, matmul_shapes, weight_is_out_in
from .nn import _l2_penalty, _weight_decay_grad
from .nn import mlp2_loss_and_grads as _mlp2_step

try:
    from distributed import WorkerPlugin
except ImportError:  # dask without distributed: the local schedulers only
    WorkerPlugin = object

__all__ = ["matmul", "linear", "linear_backward", "mlp2_loss_and_grads", "MatgradThreads", "PANEL_BYTES"]

#: The default ``panel_bytes``: how much of A's row panel and B's column panel (together) one
#: task of :func:`matmul` may read. The whole contracted dimension fits in one task up to it.
PANEL_BYTES = 512 << 20

#: How many partial results one task of a tree sum adds (dask's own default for reductions).
SPLIT_EVERY = 4


# -- threads on the workers ----------------------------------------------------------------

_configured_worker = None


def _one_thread_per_task() -> None:
    """Inside a distributed worker, matgrad's threads set to one (once per worker process):
    the worker runs one task per thread, and more would oversubscribe its cores."""
    global _configured_worker
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return  # not on a worker: the caller's setting stands
    if _configured_worker == worker.id:
        return
    _configured_worker = worker.id
    if not os.environ.get("MATGRAD_NUM_THREADS") and not getattr(worker, "_matgrad_threads", None):
        _matgrad.set_num_threads(1)


class MatgradThreads(WorkerPlugin):
    """A ``distributed`` worker plugin that sets matgrad's thread count on every worker
    (``client.register_plugin(MatgradThreads(2))``), in place of the default of one."""

    name = "matgrad-threads"

    def __init__(self, threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"MatgradThreads: threads must be an int >= 1, got {threads!r}")
        self.threads = threads

    def setup(self, worker) -> None:
        worker._matgrad_threads = self.threads
        _matgrad.set_num_threads(self.threads)


# -- matmul ------------------------------------------------------------------------------------

def _panel_product(a_blocks, b_blocks, *, dtype, precision):
    """One output tile: Σ_k A[i, k] B[k, j] over the k blocks of a panel, into one array (the
    first product written, the others added by the GEMM's store, beta = 1)."""
    _one_thread_per_task()
    out = None
    for a, b in zip(a_blocks, b_blocks):
        a = kernel_ready(a, dtype)
        b = kernel_ready(b, dtype)
        if out is None:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            out = np.empty(batch + (a.shape[-2], b.shape[-1]), dtype)
            if not out.size:
                return out
            _matgrad.matmul_into(a, b, out, precision, False)
        else:
            _matgrad.matmul_into(a, b, out, precision, True)
    return out


def _sum_blocks(*blocks):
    """The sum of partial tiles, in one new array."""
    out = np.add(blocks[0], blocks[1])
    for b in blocks[2:]:
        out += b
    return out


def _tree(parts: list, split_every: int, combine):
    """``parts`` combined ``split_every`` at a time per task (``combine(group)``), level by level."""
    while len(parts) > 1:
        groups = (parts[i:i + split_every] for i in range(0, len(parts), split_every))
        parts = [group[0] if len(group) == 1 else combine(group) for group in groups]
    return parts[0]


def _tree_sum(parts: list, split_every: int):
    """Σ of dask arrays of equal chunks, by a tree."""
    return _tree(parts, split_every, lambda group: da.map_blocks(_sum_blocks, *group, dtype=group[0].dtype))


def _k_groups(k_chunks: tuple, panel_rows: int, batch_block: int, itemsize: int, panel_bytes: int) -> list:
    """Consecutive k blocks grouped so that one group's panels (``panel_rows`` = the rows of
    A's largest row block plus the columns of B's largest column block) fit ``panel_bytes``;
    each group at least one block. Returns (start, stop) element ranges along k."""
    per_k = max(panel_rows * batch_block * itemsize, 1)
    groups, start, width = [], 0, 0
    for c in k_chunks:
        if width and (width + c) * per_k > panel_bytes:
            groups.append((start, start + width))
            start, width = start + width, 0
        width += c
    groups.append((start, start + width))
    return groups


def _largest(chunks: tuple) -> int:
    return max(chunks) if chunks else 0


def _check_split_every(split_every) -> int:
    if split_every is None:
        return SPLIT_EVERY
    if isinstance(split_every, bool) or not isinstance(split_every, (int, np.integer)) or split_every < 2:
        raise ValueError(f"split_every must be an int >= 2, got {split_every!r}")
    return int(split_every)


def matmul(a, b, *, precision=None, panel_bytes: int = PANEL_BYTES, split_every: int | None = None):
    """``a @ b`` on dask arrays (array-likes are wrapped), with :func:`numpy.matmul`'s rules,
    every block product computed by matgrad. Lazy: returns a dask array.

    ``panel_bytes``: the most bytes of A's row panel and B's column panel one task reads; the
    contracted dimension is summed in one tile per task up to it, beyond it in groups of k
    blocks whose partial tiles are added by a tree of ``split_every`` per task. Dtypes other
    than float32/float64 go to :func:`dask.array.matmul` (NumPy blocks). ``precision`` as
    for :func:`matgrad.matmul`.
    """
    a = da.asanyarray(a)
    b = da.asanyarray(b)
    if isinstance(panel_bytes, bool) or not isinstance(panel_bytes, (int, np.integer)) or panel_bytes < 1:
        raise ValueError(f"matgrad.dask.matmul: panel_bytes must be an int >= 1, got {panel_bytes!r}")
    split_every = _check_split_every(split_every)
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype != F32 and dtype != F64:
        # (Validates the precision name as matgrad.matmul does, then NumPy's blocks.)
        _matgrad.resolve_precision(precision, True)
        return da.matmul(a, b)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    if a.ndim == 0 or b.ndim == 0 or not np.isnan(a.shape + b.shape).any():  # (unknown sizes: by the blocks)
        matmul_shapes("matgrad.dask.matmul", a.shape, b.shape)  # NumPy's ValueErrors, now

    a_1d, b_1d = a.ndim == 1, b.ndim == 1
    if a_1d:
        a = a[np.newaxis, :]
    if b_1d:
        b = b[:, np.newaxis]
    if a.ndim < b.ndim:
        a = a[(np.newaxis,) * (b.ndim - a.ndim)]
    elif b.ndim < a.ndim:
        b = b[(np.newaxis,) * (a.ndim - b.ndim)]
    a = a.astype(dtype, copy=False)
    b = b.astype(dtype, copy=False)
    nd = a.ndim
    if b.chunks[-2] != a.chunks[-1]:
        b = b.rechunk({nd - 2: a.chunks[-1]})  # both operands cut k alike

    batch = tuple(f"batch{d}" for d in range(nd - 2))
    lhs, rhs, out_index = batch + ("i", "k"), batch + ("k", "j"), batch + ("i", "j")
    batch_block = 1
    for da_, db_ in zip(a.chunks[:-2], b.chunks[:-2]):
        batch_block *= max(_largest(da_), _largest(db_))
    panel_rows = _largest(a.chunks[-2]) + _largest(b.chunks[-1])
    groups = _k_groups(a.chunks[-1], panel_rows, batch_block, dtype.itemsize, int(panel_bytes))
    meta = np.empty((0,) * nd, dtype)

    tile = partial(_panel_product, dtype=dtype, precision=precision)

    def product(a_part, b_part):
        return da.blockwise(tile, out_index, a_part, lhs, b_part, rhs, dtype=dtype, meta=meta, concatenate=False)

    if len(groups) == 1:
        out = product(a, b)
    else:
        parts = [product(a[..., k0:k1], b[..., k0:k1, :]) for k0, k1 in groups]
        out = _tree_sum(parts, split_every)
    if a_1d:
        out = out[..., 0, :]
    if b_1d:
        out = out[..., 0]
    return out


# -- the linear layer ------------------------------------------------------------------------

def _as_block(x, name: str):
    """``x`` (NumPy or dask) as a dask array of one block: one key of the graph, fetched by
    each worker that needs it once, never copied into the tasks."""
    if isinstance(x, da.Array):
        return x.rechunk(x.shape) if x.numblocks != (1,) * x.ndim else x
    x = np.asarray(x)
    return da.from_array(x, chunks=x.shape, name=f"matgrad-{name}-{dask.base.tokenize(x)}")


def _rows_of(x, n_features: int, func: str, what: str):
    """``x`` as a dask array (N, n_features), chunked by rows only."""
    x = da.asanyarray(x)
    if x.ndim != 2:
        raise ValueError(f"matgrad.dask.{func}: {what} must be 2-D (rows, features), got shape {x.shape}")
    if x.shape[1] != n_features:
        raise ValueError(f"matgrad.dask.{func}: {what} has {x.shape[1]} features, expected {n_features}")
    return x.rechunk({1: -1}) if x.numblocks[1] != 1 else x


def _layer_dims(weight_shape, out_in: bool, func: str):
    if len(weight_shape) != 2:
        raise ValueError(f"matgrad.dask.{func}: weight must be 2-D, got shape {tuple(weight_shape)}")
    return (weight_shape[1], weight_shape[0]) if out_in else (weight_shape[0], weight_shape[1])


def _only(blocks):
    """The one block of a contracted index that has a single chunk (blockwise passes a list)."""
    return blocks[0] if isinstance(blocks, list) else blocks


def _linear_block(x, w, b, *, weight_layout, precision):
    _one_thread_per_task()
    return _np_linear(_only(x), _only(w), b, weight_layout=weight_layout, precision=precision)


def linear(x, weight, bias=None, *, weight_layout: str = "in_out", precision=None):
    """``x @ weight + bias`` (``weight_layout="in_out"``, weight (in, out)) or torch's
    ``x @ weight.T + bias`` (``"out_in"``) with x a dask array (N, in) chunked by rows; the
    weight and bias are one block each (NumPy arrays or dask arrays). Lazy: (N, out) by the
    same rows."""
    out_in = weight_is_out_in(weight_layout)
    w = _as_block(weight, "weight")
    n_in, n_out = _layer_dims(w.shape, out_in, "linear")
    x = _rows_of(x, n_in, "linear", "x")
    b = None if bias is None else _as_block(bias, "bias")
    check_bias("matgrad.dask.linear", None if b is None else b.shape, w.shape, n_out)
    dtype = float_dtype("matgrad.dask.linear", x, w, b)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    w_index = ("o", "f") if out_in else ("f", "o")
    args = [x, ("r", "f"), w, w_index] + ([b, ("o",)] if b is not None else [None, None])
    block = partial(_linear_block, weight_layout=weight_layout, precision=precision)
    return da.blockwise(block, ("r", "o"), *args, dtype=dtype, meta=np.empty((0, 0), dtype), concatenate=False)


def _input_grad_block(g, w, *, out_in, dtype, precision):
    """grad_x of one row chunk: G Wᵀ (W in × out) or G W (torch's out × in), on views."""
    _one_thread_per_task()
    g = kernel_ready(_only(g), dtype)
    w = kernel_ready(_only(w), dtype)
    return _np_matmul(g, w if out_in else w.T, precision=precision)


def _weight_grad_block(g, x, *, out_in, dtype, precision):
    """One row chunk's share of grad_weight, with a leading axis of one for the tree:
    Xᵀ G (in × out) or Gᵀ X (torch's out × in)."""
    _one_thread_per_task()
    g = kernel_ready(g, dtype)
    x = kernel_ready(x, dtype)
    part = _np_matmul(g.T, x, precision=precision) if out_in else _np_matmul(x.T, g, precision=precision)
    return part[np.newaxis]


def _bias_grad_block(g, *, dtype):
    return np.sum(g, axis=0, dtype=dtype)[np.newaxis]


def linear_backward(grad_y, x, weight, *, weight_layout: str = "in_out", grad_x: bool = True,
                    grad_weight: bool = True, grad_bias: bool = True, precision=None,
                    split_every: int | None = None):
    """The linear layer's gradients from ``grad_y`` (N, out) and ``x`` (N, in), dask arrays
    chunked by the same rows: ``(grad_x, grad_weight, grad_bias)`` as lazy dask arrays
    (``None`` for those not asked for). grad_x keeps the rows' chunks; grad_weight (the
    weight's shape) and grad_bias (out,) are sums over the row chunks, ``split_every``
    partial results per task of the tree."""
    out_in = weight_is_out_in(weight_layout)
    split_every = _check_split_every(split_every)
    w = _as_block(weight, "weight")
    n_in, n_out = _layer_dims(w.shape, out_in, "linear_backward")
    x = _rows_of(x, n_in, "linear_backward", "x")
    g = _rows_of(grad_y, n_out, "linear_backward", "grad_y")
    if g.shape[0] != x.shape[0] and not (np.isnan(g.shape[0]) or np.isnan(x.shape[0])):
        raise ValueError(f"matgrad.dask.linear_backward: grad_y has {g.shape[0]} rows, x has {x.shape[0]}")
    if g.chunks[0] != x.chunks[0]:
        g = g.rechunk({0: x.chunks[0]})
    dtype = float_dtype("matgrad.dask.linear_backward", g, x, w)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    w_index = ("o", "f") if out_in else ("f", "o")
    gx = gw = gb = None
    options = dict(out_in=out_in, dtype=dtype, precision=precision)
    if grad_x:
        gx = da.blockwise(partial(_input_grad_block, **options), ("r", "f"), g, ("r", "o"), w, w_index,
                          dtype=dtype, meta=np.empty((0, 0), dtype), concatenate=False)
    if grad_weight:
        parts = da.blockwise(partial(_weight_grad_block, **options), ("r",) + w_index, g, ("r", "o"),
                             x, ("r", "f"), adjust_chunks={"r": 1}, dtype=dtype,
                             meta=np.empty((0, 0, 0), dtype), concatenate=False)
        gw = _tree_sum([parts.blocks[i] for i in range(parts.numblocks[0])], split_every)[0]
    if grad_bias:
        parts = da.blockwise(partial(_bias_grad_block, dtype=dtype), ("r", "o"), g, ("r", "o"),
                             adjust_chunks={"r": 1}, dtype=dtype, meta=np.empty((0, 0), dtype))
        gb = _tree_sum([parts.blocks[i] for i in range(parts.numblocks[0])], split_every)[0]
    return gx, gw, gb


# -- the MLP training step, data-parallel ---------------------------------------------------

def _shard_step(params, X, y, precision):
    """One shard's step, its loss and gradients weighted by its rows (the root divides by N)."""
    _one_thread_per_task()
    n = X.shape[0]
    loss, grads = _mlp2_step(params, X, y, 0.0, precision=precision)
    for g in grads.values():
        g *= g.dtype.type(n)
    return n, loss * n, grads


def _add_steps(*steps):
    """Σ of shards' (rows, weighted loss, weighted gradients), in the first one's new arrays."""
    n, loss, grads = steps[0][0], steps[0][1], {k: v.copy() for k, v in steps[0][2].items()}
    for m, l, g in steps[1:]:
        n += m
        loss += l
        for key, value in g.items():
            grads[key] += value
    return n, loss, grads


def mlp2_loss_and_grads(params, X, y, reg: float = 0.0, *, precision=None, split_every: int | None = None):
    """:func:`matgrad.nn.mlp2_loss_and_grads` data-parallel: X (N, D) and labels y (N,) dask
    arrays (or array-likes) chunked by rows, one task per row chunk running the core's step
    on its shard, the shards' gradients summed with weights n_i/N by a tree of
    ``split_every`` per task, the L2 term (``reg``) added once. Computes on the current dask
    scheduler and returns ``(loss, grads)`` as a float and NumPy arrays, equal (to rounding)
    to the single-process step on the whole of X."""
    split_every = _check_split_every(split_every)
    reg = float(reg)
    if not np.isfinite(reg) or reg < 0:
        raise ValueError(f"reg must be a finite number >= 0, got {reg}")
    missing = {"W1", "b1", "W2", "b2"} - set(params)
    if missing:
        raise ValueError(f"params is missing {sorted(missing)}")
    params = {k: np.asarray(params[k]) for k in ("W1", "b1", "W2", "b2")}
    if params["W1"].ndim != 2:
        raise ValueError(f"params['W1'] must be 2-D (D, H), got shape {params['W1'].shape}")
    X = _rows_of(X, params["W1"].shape[0], "mlp2_loss_and_grads", "X")
    y = da.asanyarray(y)
    if y.ndim != 1 or (y.shape[0] != X.shape[0] and not np.isnan(y.shape[0] + X.shape[0])):
        raise ValueError(f"matgrad.dask.mlp2_loss_and_grads: y must be 1-D with one label per row of X "
                         f"{X.shape}, got shape {y.shape}")
    if y.chunks[0] != X.chunks[0]:
        y = y.rechunk({0: X.chunks[0]})
    if X.shape[0] == 0:
        raise ValueError("matgrad.dask.mlp2_loss_and_grads: X has no rows")
    dtype = float_dtype("matgrad.dask.mlp2_loss_and_grads", X, *params.values())
    precision = _matgrad.resolve_precision(precision, dtype == F32)

    shared = dask.delayed(params, pure=True, traverse=True)  # one key: sent to each worker once
    steps = [
        dask.delayed(_shard_step, pure=True)(shared, xs, ys, precision)
        for xs, ys, rows in zip(X.to_delayed().ravel(), y.to_delayed().ravel(), X.chunks[0])
        if rows != 0
    ]
    root = _tree(steps, split_every, lambda group: dask.delayed(_add_steps, pure=True)(*group))
    (n, loss, grads), = dask.compute(root)
    for key, g in grads.items():
        g /= g.dtype.type(n)
    loss /= n
    if reg:  # the L2 term once, as the single-process step adds it
        loss += _l2_penalty(params["W1"], params["W2"], reg)
        for key in ("W1", "W2"):
            grads[key] += _weight_decay_grad(params[key], reg)
    return float(loss), grads
