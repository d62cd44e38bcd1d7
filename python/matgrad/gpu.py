"""matgrad on a GPU through wgpu (Vulkan, Metal, DX12): float32 only.

``matmul``, ``matmul_backward``, ``linear`` and ``linear_backward`` take the arguments of their
CPU counterparts in :mod:`matgrad` and give the same results (same shape rules, same
ValueErrors). Given NumPy arrays they return NumPy arrays (uploading the operands and reading
the result back); given :class:`GpuArray` s (from :func:`asarray`) they return GpuArrays that
stay on the device, so a chain of calls moves no data until ``.numpy()``. Mixing the two in one
call is a TypeError.

The device is opened on first use, not at ``import matgrad``. It is chosen as wgpu's tools
choose it: ``WGPU_BACKEND`` (e.g. ``vulkan``) narrows the backends, ``WGPU_ADAPTER_NAME`` picks
an adapter by a substring of its name, ``WGPU_POWER_PREF`` (``low``/``high``) steers the default.
"""

from __future__ import annotations

import math

import numpy as np

from . import _matgrad
from ._arrays import F32 as _F32
from ._arrays import sum_to_shape
from ._shapes import check_bias, check_grad_y, linear_dims, matmul_backward_shapes, matmul_shapes, weight_is_out_in

__all__ = [
    "is_available",
    "adapter_info",
    "synchronize",
    "asarray",
    "GpuArray",
    "matmul",
    "matmul_backward",
    "linear",
    "linear_backward",
]

_unavailable: str | None = None
_checked = False


def _built_with_gpu() -> bool:
    return hasattr(_matgrad, "gpu_gemm")


def _ensure() -> None:
    """Opens the device once; RuntimeError saying why if there is none."""
    global _checked, _unavailable
    if not _built_with_gpu():
        raise RuntimeError(
            "matgrad.gpu: this build of matgrad has no GPU support; rebuild the extension with "
            "the cargo feature 'gpu' (maturin build --release --features gpu)"
        )
    if not _checked:
        _unavailable = _matgrad.gpu_unavailable_reason()
        _checked = True
    if _unavailable is not None:
        raise RuntimeError(f"matgrad.gpu: no usable GPU adapter: {_unavailable}")


def is_available() -> bool:
    """True if matgrad was built with GPU support and a device opens (opens it)."""
    try:
        _ensure()
    except RuntimeError:
        return False
    return True


def adapter_info() -> dict:
    """The adapter in use: ``name``, ``backend``, ``device_type``, ``driver``, ``driver_info``."""
    _ensure()
    return dict(_matgrad.gpu_adapter_info())


def synchronize() -> None:
    """Waits until every product queued on the device has run (calls return once their work
    is queued; ``.numpy()`` waits too). For timing device-resident work apart from transfers."""
    _ensure()
    _matgrad.gpu_synchronize()


class GpuArray:
    """A C-ordered float32 array resident on the GPU. ``.numpy()`` reads it back."""

    __slots__ = ("_buf", "_shape")

    def __init__(self, buf, shape: tuple):
        self._buf = buf
        self._shape = tuple(int(d) for d in shape)

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return _F32

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    def numpy(self) -> np.ndarray:
        """A NumPy copy of the data (waits for the work queued on it)."""
        out = np.empty(self._shape, _F32)
        _matgrad.gpu_download(self._buf, out)
        return out

    def reshape(self, *shape) -> "GpuArray":
        """The same buffer seen with another shape of the same size (no copy)."""
        if len(shape) == 1 and isinstance(shape[0], tuple):
            shape = shape[0]
        if math.prod(shape) != self.size or any(d < 0 for d in shape):
            raise ValueError(f"cannot reshape a GpuArray of shape {self._shape} into {tuple(shape)}")
        return GpuArray(self._buf, shape)

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d GpuArray")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"GpuArray(shape={self._shape}, dtype=float32)"


def asarray(a) -> GpuArray:
    """A GpuArray holding a copy of ``a`` (float32; a GpuArray is returned as is)."""
    if isinstance(a, GpuArray):
        return a
    _ensure()
    host = _host_f32("asarray", a)
    return GpuArray(_matgrad.gpu_upload(np.ascontiguousarray(host)), host.shape)


def _host_f32(func: str, a) -> np.ndarray:
    if isinstance(a, np.ndarray) or hasattr(a, "__array__") or np.isscalar(a):
        arr = np.asarray(a)
        if arr.dtype != _F32:
            raise TypeError(
                f"{func}: the GPU path computes float32 only, got dtype {arr.dtype} "
                f"(convert with .astype(np.float32), or use the CPU functions in matgrad)"
            )
        return arr
    # Lists and other array-likes carry no dtype of their own.
    return np.asarray(a, dtype=_F32)


def _zeros(shape: tuple) -> GpuArray:
    return GpuArray(_matgrad.gpu_zeros(math.prod(shape)), shape)


class _Call:
    """The operands of one call, on the device, and whether results go back to NumPy."""

    def __init__(self, func: str, *operands):
        _ensure()
        present = [x for x in operands if x is not None]
        on_device = [isinstance(x, GpuArray) for x in present]
        if any(on_device) and not all(on_device):
            kinds = ", ".join(type(x).__name__ for x in present)
            raise TypeError(
                f"{func}: operands must be all GpuArrays or all host arrays, got {kinds} "
                f"(move them with matgrad.gpu.asarray or GpuArray.numpy())"
            )
        self.host = not all(on_device) or not present
        self.func = func

    def operand(self, x):
        """``x`` with ``.shape`` and ``.ndim``: a host array (checked, not yet uploaded) or the
        GpuArray itself."""
        if x is None or isinstance(x, GpuArray):
            return x
        return _host_f32(self.func, x)

    def device(self, x) -> GpuArray | None:
        if x is None or isinstance(x, GpuArray):
            return x
        return GpuArray(_matgrad.gpu_upload(np.ascontiguousarray(x)), x.shape)

    def result(self, x: GpuArray | None):
        if x is None:
            return None
        return x.numpy() if self.host else x


def _row_major(cols: int, offset: int = 0, batch_stride: int = 0) -> tuple:
    """(offset, row stride, column stride, batch stride) of a C-ordered matrix."""
    return (offset, cols, 1, batch_stride)


def _transposed(layout: tuple) -> tuple:
    offset, rs, cs, bs = layout
    return (offset, cs, rs, bs)


def _gemm(a, a_layout, b, b_layout, c, c_layout, m, n, k, batch=1, bias=None, accumulate=False):
    _matgrad.gpu_gemm(
        a._buf, a_layout, b._buf, b_layout, c._buf, c_layout,
        m, n, k, batch, None if bias is None else bias._buf, 0, accumulate,
    )  # fmt: skip


# ----------------------------------------------------------------------------------- matmul


def _batch_strides(shape: tuple, batch: tuple) -> list:
    """Element strides of a C-ordered ``shape`` (..., r, c) over the broadcast ``batch``
    dimensions, 0 where it broadcasts."""
    lead = len(batch) - (len(shape) - 2)
    padded = (1,) * lead + tuple(shape[:-2])
    strides, step = [], shape[-2] * shape[-1]
    for d in reversed(range(len(batch))):
        strides.append(step if padded[d] == batch[d] and batch[d] != 1 else 0)
        step *= padded[d]
    return strides[::-1]


def _batched_gemm(a, a_shape, a_t, b, b_shape, b_t, c, m, n, k, batch):
    """``c (batch..., m, n) = op(a) @ op(b)`` over broadcast batch dimensions, with op a
    transpose where ``*_t`` (the operand is then stored (..., k, m) or (..., n, k)).

    The batch dimensions each operand can walk with one stride go in one dispatch (usually
    all of them); the rest are looped here."""
    ops = [a_shape, b_shape, batch + (m, n)]
    strides = [_batch_strides(s, batch) for s in ops]
    dims = [d for d in range(len(batch)) if batch[d] != 1]
    inner = []  # the trailing batch dims that merge into one strided batch
    while dims:
        d = dims[-1]
        if inner and any(s[d] != s[inner[0]] * batch[inner[0]] for s in strides):
            break
        inner.insert(0, dims.pop())
    count = math.prod(batch[d] for d in inner)
    inner_strides = [s[inner[-1]] if inner else 0 for s in strides]

    def layout(shape, transposed, offset, bs):
        lay = _row_major(shape[-1], offset, bs)
        return _transposed(lay) if transposed else lay

    for index in np.ndindex(*(batch[d] for d in dims)):
        offs = [sum(i * s[d] for i, d in zip(index, dims)) for s in strides]
        _gemm(
            a, layout(a_shape, a_t, offs[0], inner_strides[0]),
            b, layout(b_shape, b_t, offs[1], inner_strides[1]),
            c, _row_major(n, offs[2], inner_strides[2]),
            m, n, k, count,
        )  # fmt: skip


def _reduce_to(full: GpuArray, full_shape: tuple, shape: tuple) -> GpuArray:
    """``full`` summed over the batch dimensions that broadcasting added to ``shape``: on the
    device when they are leading ones (a column sum of a (reduced, rest) matrix), otherwise on
    the host with NumPy."""
    shape = tuple(shape)
    if full_shape == shape:
        return full
    kept = shape
    while kept and kept[0] == 1 and len(kept) > 2:
        kept = kept[1:]  # a leading length-1 dimension reduces like a missing one
    lead = len(full_shape) - len(kept)
    if full_shape[lead:] == kept:
        rows, cols = math.prod(full_shape[:lead]), math.prod(kept)
        out = _zeros(shape)
        _matgrad.gpu_column_sums(full._buf, (0, cols, 1), rows, cols, out._buf, 0)
        return out
    host = sum_to_shape(full.numpy().reshape(full_shape), shape)
    return GpuArray(_matgrad.gpu_upload(np.ascontiguousarray(host, _F32)), shape)


def matmul(a, b, /, out=None):
    """``a @ b`` on the GPU, with :func:`matgrad.matmul`'s shape rules (1-D operands, broadcast
    batch dimensions). ``out`` (optional) is an ndarray for host operands, a GpuArray of the
    result's shape for device operands."""
    call = _Call("matmul", a, b)
    a, b = call.operand(a), call.operand(b)
    s = matmul_shapes("matmul", a.shape, b.shape)
    a2s, b2s, m, k, n, batch, result_shape = s.a, s.b, s.m, s.k, s.n, s.batch, s.result
    if out is not None and not call.host:
        if not isinstance(out, GpuArray):
            raise TypeError(f"matmul: out must be a GpuArray for GpuArray operands, got {type(out).__name__}")
        if out.shape != result_shape:
            raise ValueError(f"matmul: out has shape {out.shape}, the result has shape {result_shape}")
        c = out.reshape(batch + (m, n))
    else:
        c = _zeros(batch + (m, n))
    ad, bd = call.device(a), call.device(b)
    _batched_gemm(ad, a2s, False, bd, b2s, False, c, m, n, k, batch)
    c = c.reshape(result_shape)
    if out is not None and call.host:
        np.copyto(out, c.numpy(), casting="same_kind")
        return out
    if out is not None:
        return out
    result = call.result(c)
    if call.host and result.ndim == 0:
        return result[()]
    return result


def matmul_backward(grad_out, a, b, /, *, grad_a: bool = True, grad_b: bool = True):
    """Gradients of ``matmul(a, b)`` given ``grad_out``, as :func:`matgrad.matmul_backward`:
    ∂L/∂A = G Bᵀ and ∂L/∂B = Aᵀ G, transposes read in place; broadcast batch dimensions are
    summed back (on the device when they lead, as they do for a shared weight)."""
    call = _Call("matmul_backward", grad_out, a, b)
    g, a, b = (call.operand(x) for x in (grad_out, a, b))
    s = matmul_backward_shapes("matmul_backward", g.shape, a.shape, b.shape)
    a2s, b2s, m, k, n, batch = s.a, s.b, s.m, s.k, s.n, s.batch
    gd, ad, bd = call.device(g), call.device(a), call.device(b)
    gs = batch + (m, n)
    ga = gb = None
    if grad_a:
        full = _zeros(batch + (m, k))
        # G (m, n) times Bᵀ: B stored (k, n) read transposed.
        _batched_gemm(gd, gs, False, bd, b2s, True, full, m, k, n, batch)
        ga = _reduce_to(full, batch + (m, k), a2s).reshape(a.shape)
    if grad_b:
        rows = math.prod(batch) * m
        if len(b2s) == 2 and tuple(a2s[:-2]) == tuple(batch) and len(batch):
            # A 2-D b is shared by every batch: Σ_batch A_iᵀ G_i is one GEMM with the batch
            # folded into k (A and G are both (batch·m) rows on the device).
            gb = _zeros((k, n))
            _gemm(ad, _transposed(_row_major(k)), gd, _row_major(n), gb, _row_major(n), k, n, rows)
        else:
            full = _zeros(batch + (k, n))
            _batched_gemm(ad, a2s, True, gd, gs, False, full, k, n, m, batch)
            gb = _reduce_to(full, batch + (k, n), b2s)
        gb = gb.reshape(b.shape)
    return call.result(ga), call.result(gb)


# ----------------------------------------------------------------------------------- linear


def _weight_layout(out_in: bool, n_in: int, n_out: int) -> tuple:
    """The weight as the (in × out) matrix W_io: stored (in, out), or (out, in) read
    transposed."""
    return _transposed(_row_major(n_in)) if out_in else _row_major(n_out)


def linear(x, weight, bias=None, /, *, weight_layout: str = "in_out"):
    """:func:`matgrad.linear` on the GPU: ``x @ W + bias`` (W (in, out)) or, with
    ``weight_layout="out_in"``, ``x @ W.T + bias``; the bias is added as the tiles are stored."""
    out_in = weight_is_out_in(weight_layout)
    call = _Call("linear", x, weight, bias)
    x, w, b = call.operand(x), call.operand(weight), call.operand(bias)
    n_in, n_out = linear_dims("linear", x.shape, w.shape, out_in, weight_layout)
    check_bias("linear", None if b is None else b.shape, w.shape, n_out)
    rows = math.prod(x.shape[:-1])
    xd, wd, bd = call.device(x), call.device(w), call.device(b)
    y = _zeros((rows, n_out))
    _gemm(xd, _row_major(n_in), wd, _weight_layout(out_in, n_in, n_out), y, _row_major(n_out),
          rows, n_out, n_in, bias=bd)  # fmt: skip
    return call.result(y.reshape(x.shape[:-1] + (n_out,)))


def linear_backward(grad_y, x, weight, /, *, weight_layout: str = "in_out", grad_x: bool = True,
                    grad_weight: bool = True, grad_bias: bool = True):
    """:func:`matgrad.linear_backward` on the GPU: ``(grad_x, grad_weight, grad_bias)`` with
    grad_x = G Wᵀ, grad_weight in the weight's own layout (Xᵀ G, or Gᵀ X for ``"out_in"``),
    grad_bias = the column sums of G (a reduction kernel); ``None`` for those not asked for."""
    out_in = weight_is_out_in(weight_layout)
    call = _Call("linear_backward", grad_y, x, weight)
    g, x, w = call.operand(grad_y), call.operand(x), call.operand(weight)
    n_in, n_out = linear_dims("linear_backward", x.shape, w.shape, out_in, weight_layout)
    check_grad_y("linear_backward", g.shape, x.shape, w.shape, n_out)
    rows = math.prod(x.shape[:-1])
    gd, xd, wd = call.device(g), call.device(x), call.device(w)
    gx = gw = gb = None
    if grad_x:
        gx = _zeros((rows, n_in))
        # G (rows, out) times W_ioᵀ (out, in).
        w_io_t = _transposed(_weight_layout(out_in, n_in, n_out))
        _gemm(gd, _row_major(n_out), wd, w_io_t, gx, _row_major(n_in), rows, n_in, n_out)
        gx = gx.reshape(x.shape)
    if grad_weight:
        gw = _zeros(w.shape)
        if out_in:
            # Gᵀ X: (out, rows) times (rows, in).
            _gemm(gd, _transposed(_row_major(n_out)), xd, _row_major(n_in), gw, _row_major(n_in),
                  n_out, n_in, rows)  # fmt: skip
        else:
            # Xᵀ G: (in, rows) times (rows, out).
            _gemm(xd, _transposed(_row_major(n_in)), gd, _row_major(n_out), gw, _row_major(n_out),
                  n_in, n_out, rows)  # fmt: skip
    if grad_bias:
        gb = _zeros((n_out,))
        _matgrad.gpu_column_sums(gd._buf, (0, n_out, 1), rows, n_out, gb._buf, 0)
    return call.result(gx), call.result(gw), call.result(gb)
