"""Type stubs for the compiled extension ``matgrad._matgrad`` (thin glue over matgrad-core).

Apart from ``matmul``, these functions take arrays already normalized by the Python layer: float32 or float64 of
one dtype, aligned, native byte order. They compute into the given output arrays with the GIL
released and raise ValueError/TypeError for anything else.
"""

import numpy as np
import numpy.typing as npt

__version__: str

def matmul(a: npt.ArrayLike, b: npt.ArrayLike, /, out: npt.NDArray | None = None, *, precision: str | None = None) -> npt.NDArray | np.generic:
    """``matgrad.matmul`` itself: numpy.matmul's semantics; the common call computed here, any
    other handed to ``matgrad._matmul.matmul_general``."""

def matmul_into(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], out: npt.NDArray[np.floating], precision: str = "highest", accumulate: bool = False, /) -> None:
    """``out[...] = a @ b``; all three of equal rank >= 2, batch dims of ``a``/``b`` equal to
    ``out``'s or 1 (broadcast)."""

def linear(x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None, /, *, weight_layout: str = "in_out",
           precision: str | None = None) -> npt.NDArray:
    """``matgrad.linear`` itself: the common call computed here, any other handed to
    ``matgrad._grad.linear_general``."""

def linear_backward(grad_y: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, /, *, weight_layout: str = "in_out",
                    grad_x: bool = True, grad_weight: bool = True, grad_bias: bool = True,
                    precision: str | None = None) -> tuple:
    """``matgrad.linear_backward`` itself: the common call computed here, any other handed
    to ``matgrad._grad.linear_backward_general``."""

def matmul_backward(grad_out: npt.ArrayLike, a: npt.ArrayLike, b: npt.ArrayLike, /, *, grad_a: bool = True,
                    grad_b: bool = True, precision: str | None = None) -> tuple:
    """``matgrad.matmul_backward`` itself: the common call computed here, any other handed
    to ``matgrad._grad.matmul_backward_general``."""

def linear_forward(
    x: npt.NDArray[np.floating],
    weight: npt.NDArray[np.floating],
    bias: npt.NDArray[np.floating] | None,
    out_in: bool,
    relu: bool,
    y: npt.NDArray[np.floating],
    /,
) -> None:
    """``y[...] = relu?(x @ W + bias)`` with x (batch, in) and W (in, out), or (out, in) when
    ``out_in``; bias and relu are applied as the GEMM stores y."""

def linear_backward_into(
    grad_y: npt.NDArray[np.floating],
    x: npt.NDArray[np.floating],
    weight: npt.NDArray[np.floating],
    out_in: bool,
    grad_x: npt.NDArray[np.floating] | None,
    grad_weight: npt.NDArray[np.floating] | None,
    grad_bias: npt.NDArray[np.floating] | None,
    accumulate_weight: bool = False,
    grad_x_relu_mask: npt.NDArray[np.floating] | None = None,
    /,
) -> None:
    """Writes the linear layer's gradients into the outputs given (None: not wanted);
    with ``accumulate_weight`` grad_weight is added to rather than overwritten; with
    ``grad_x_relu_mask`` (x's shape: the output of the ReLU that x is) grad_x is kept only
    where it is positive, 0 elsewhere, as it is stored."""

def mlp2_loss_and_grads(
    x: npt.NDArray[np.floating],
    w1: npt.NDArray[np.floating],
    b1: npt.NDArray[np.floating],
    w2: npt.NDArray[np.floating],
    b2: npt.NDArray[np.floating],
    labels: npt.NDArray[np.intp],
    grad_w1: npt.NDArray[np.floating],
    grad_b1: npt.NDArray[np.floating],
    grad_w2: npt.NDArray[np.floating],
    grad_b2: npt.NDArray[np.floating],
    accumulate_weights: bool,
    /,
) -> float:
    """One training step of the two-layer ReLU network with softmax cross-entropy: writes
    the gradients into ``grad_*`` (the weight gradients added to with
    ``accumulate_weights``) and returns the mean cross-entropy (no weight-decay term)."""

def set_num_threads(n: int, /) -> None:
    """Sets the size of matgrad's thread pool (>= 1)."""

def get_num_threads() -> int:
    """The size of matgrad's thread pool."""

def set_thread_pool(pool: str, library: str | None = None) -> None:
    """Computes on matgrad's own threads ("matgrad") or on the loaded libgomp's ("openmp")."""

def get_thread_pool() -> tuple[str, str | None]:
    """("matgrad", None) or ("openmp", the libgomp's path)."""

def simd_kernel() -> str:
    """The SIMD kernel in use: "avx512", "avx2", "neon" or "generic"."""

def available_kernels() -> list[str]:
    """The kernels this CPU can run, fastest first."""

def force_kernel(name: str, /) -> None:
    """Makes later calls use the named kernel (ValueError if unknown or unsupported)."""

# --- Present only when built with the cargo feature "gpu" (the default); see matgrad.gpu. ---

GPU_DRIVER_HINT: str

class GpuBuffer:
    """A device buffer of float32 elements (shape kept by matgrad.gpu.GpuArray)."""

    def __len__(self) -> int: ...

def gpu_unavailable_reason() -> str | None:
    """None if a GPU device opens (opening it on first call), else why not."""

def gpu_adapter_info() -> dict[str, str]:
    """name, backend, device_type, driver, driver_info of the adapter in use."""

def gpu_max_buffer_bytes() -> int:
    """The largest buffer, in bytes, a kernel can bind on this device."""

def gpu_synchronize() -> None:
    """Waits for the work queued on the device."""

def gpu_upload(array: npt.NDArray[np.float32], /) -> GpuBuffer:
    """A device copy of a C-contiguous float32 array (ValueError beyond the device's limit)."""

def gpu_zeros(len: int, /) -> GpuBuffer:
    """A device buffer of ``len`` zeros."""

def gpu_download(buf: GpuBuffer, out: npt.NDArray[np.float32], /) -> None:
    """Copies ``buf`` into the C-contiguous float32 array ``out`` of the same size."""

def gpu_gemm(
    a: GpuBuffer,
    a_layout: tuple[int, int, int, int],
    b: GpuBuffer,
    b_layout: tuple[int, int, int, int],
    c: GpuBuffer,
    c_layout: tuple[int, int, int, int],
    m: int,
    n: int,
    k: int,
    batch: int,
    bias: GpuBuffer | None,
    bias_offset: int,
    accumulate: bool,
) -> None:
    """``c[z] = a[z] @ b[z] (+ bias along columns) (+ c[z])`` for z < batch; layouts are
    (offset, row stride, column stride, batch stride) in elements."""

def gpu_column_sums(
    g: GpuBuffer, g_layout: tuple[int, int, int], rows: int, cols: int, sums: GpuBuffer, out_offset: int, /
) -> None:
    """``sums[out_offset + j] = Σ_i g[i, j]``; g_layout is (offset, row stride, column stride)."""

def set_matmul_precision(precision: str, /) -> None:
    """The default precision of float32 products: "highest", "high" or "medium"."""

def get_matmul_precision() -> str:
    """The default precision of float32 products."""

def resolve_precision(precision: str | None, float32: bool, /) -> str:
    """The precision a product uses (None: the default for float32, "highest" for float64);
    ValueError for an unknown name, TypeError for "high"/"medium" on float64."""

def amx_supported() -> bool:
    """Whether "high"/"medium" float32 products can run on this CPU's AMX tiles."""

def use_amx(enabled: bool, /) -> None:
    """Lets (or stops) "high"/"medium" products use AMX (else the FMA kernels round while packing)."""

def amx_in_use() -> bool:
    """Whether "high"/"medium" products run on AMX now."""

def fma_peak(float64: bool, threads: int, seconds: float, /) -> float:
    """GFLOP/s of a register-only FMA loop (``matgrad.fma_peak``)."""
