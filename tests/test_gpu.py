"""matgrad.gpu against NumPy (float64 references) and the CPU path.

Runs wherever wgpu finds an adapter; CI installs Debian's lavapipe (mesa-vulkan-drivers), a
Vulkan device on the CPU, so these run there too. Skipped only when there is no adapter at
all (or the extension was built without the gpu feature), with the reason.
"""

import numpy as np
import pytest

import matgrad
from matgrad import gpu

def _unavailable_reason() -> str:
    """Why there is no device (adapter_info raises saying so)."""
    try:
        gpu.adapter_info()
    except RuntimeError as e:
        return str(e)
    return "matgrad.gpu.is_available() is False, yet adapter_info() found an adapter"


if not gpu.is_available():
    reason = _unavailable_reason()
    # The gpu feature is in the default build: only a machine without an adapter skips.
    print(f"\ntests/test_gpu.py skipped: {reason}")
    pytest.skip(reason, allow_module_level=True)

EPS = np.finfo(np.float32).eps


def close(got, a_abs_b_abs, ref, k, what=""):
    """|got - ref| <= c·(k + 2)·eps_f32·(|A||B| + |extra terms|), elementwise: the error bound
    of a float32 dot product of length k, with a little room for the bias/accumulate adds."""
    got = np.asarray(got, np.float64)
    tol = 4 * (k + 2) * EPS * (np.asarray(a_abs_b_abs, np.float64) + 1e-30)
    err = np.abs(got - ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.all(err <= tol), f"{what}: max error {err.max()} exceeds tolerance (k={k})"


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def ref_matmul(a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.matmul(a64, b64), np.matmul(np.abs(a64), np.abs(b64))


SIZES = [
    (1, 1, 1),
    (3, 17, 1),
    (1, 65, 3),
    (17, 1, 63),
    (63, 65, 17),
    (65, 63, 129),
    (129, 3, 65),
    (64, 64, 64),
    (130, 70, 9),
]


def test_adapter_info_and_lazy_import():
    info = gpu.adapter_info()
    assert set(info) >= {"name", "backend", "device_type", "driver"}
    print(f"\nGPU adapter: {info}")


@pytest.mark.parametrize("m,n,k", SIZES)
def test_matmul_2d_against_numpy_and_cpu(m, n, k, rng):
    a, b = f32(rng, m, k), f32(rng, k, n)
    ref, mag = ref_matmul(a, b)
    got = gpu.matmul(a, b)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    close(got, mag, ref, k, f"matmul {m}x{k} @ {k}x{n}")
    close(got, mag, matgrad.matmul(a, b).astype(np.float64), 2 * k, "vs CPU")


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((4, 17, 9), (4, 9, 5)),
        ((4, 17, 9), (9, 5)),  # b broadcast over the batch
        ((17, 9), (3, 9, 65)),  # a broadcast over the batch
        ((2, 1, 5, 3), (1, 3, 3, 7)),  # both broadcast: the batch is looped
        ((2, 3, 5, 3), (3, 3, 7)),
        ((9,), (3, 9, 4)),  # 1-D operands
        ((5, 9), (9,)),
        ((9,), (9,)),
        ((0, 4), (4, 3)),
        ((3, 0), (0, 2)),
    ],
)
def test_matmul_batched_and_1d(sa, sb, rng):
    a, b = f32(rng, *sa), f32(rng, *sb)
    ref, mag = ref_matmul(a, b)
    got = gpu.matmul(a, b)
    close(got, mag, np.asarray(ref), max(sa[-1], 1), f"matmul {sa} @ {sb}")


def test_matmul_gpuarray_round_trip_and_chain(rng):
    a, b, c = f32(rng, 33, 20), f32(rng, 20, 47), f32(rng, 47, 5)
    ga, gb, gc = gpu.asarray(a), gpu.asarray(b), gpu.asarray(c)
    assert ga.shape == (33, 20) and ga.dtype == np.float32
    assert "GpuArray" in repr(ga) and "(33, 20)" in repr(ga)
    np.testing.assert_array_equal(ga.numpy(), a)
    abc = gpu.matmul(gpu.matmul(ga, gb), gc)  # stays on the device in between
    assert isinstance(abc, gpu.GpuArray) and abc.shape == (33, 5)
    ref = a.astype(np.float64) @ b @ c
    mag = np.abs(a.astype(np.float64)) @ np.abs(b) @ np.abs(c)
    close(abc.numpy(), mag, ref, 20 + 47, "chained")
    out = gpu.asarray(np.zeros((33, 47), np.float32))
    assert gpu.matmul(ga, gb, out=out) is out
    close(out.numpy(), *ref_matmul(a, b)[::-1], 20, "out=")


def test_products_queued_then_synchronized(rng):
    # What the device-resident timing does: several products in flight, one wait at the end.
    a, b = f32(rng, 130, 67), f32(rng, 67, 129)
    ga, gb = gpu.asarray(a), gpu.asarray(b)
    results = [gpu.matmul(ga, gb) for _ in range(4)]
    gpu.synchronize()
    for r in results:
        close(r.numpy(), *ref_matmul(a, b)[::-1], 67, "queued")


def test_empty_and_scalar_results(rng):
    assert gpu.asarray(np.zeros((0, 3), np.float32)).numpy().shape == (0, 3)
    v = f32(rng, 7)
    got = gpu.matmul(v, v)
    assert np.ndim(got) == 0
    assert abs(float(got) - float(v.astype(np.float64) @ v)) <= 4 * 9 * EPS * float(np.abs(v) @ np.abs(v))


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((17, 9), (9, 65)),
        ((1, 1), (1, 1)),
        ((63, 1), (1, 3)),
        ((4, 17, 9), (9, 5)),  # shared 2-D b: grad_b with the batch folded into k
        ((17, 9), (4, 9, 5)),  # shared a: grad_a summed on the device
        ((2, 1, 5, 3), (1, 3, 3, 7)),  # middle broadcast: summed on the host
        ((9,), (9, 4)),
        ((5, 9), (9,)),
    ],
)
def test_matmul_backward_against_cpu(sa, sb, rng):
    a, b = f32(rng, *sa), f32(rng, *sb)
    g = f32(rng, *np.matmul(a, b).shape)
    ga, gb = gpu.matmul_backward(g, a, b)
    ca, cb = matgrad.matmul_backward(g.astype(np.float64), a.astype(np.float64), b.astype(np.float64))
    ma, mb = matgrad.matmul_backward(np.abs(g).astype(np.float64), np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    k_total = np.prod(np.broadcast_shapes(np.atleast_2d(a).shape[:-2], np.atleast_2d(b).shape[:-2]), dtype=int)
    close(ga, ma, ca, sb[-1] * k_total, "grad_a")
    close(gb, mb, cb, max(sa[-2] if len(sa) > 1 else 1, 1) * k_total, "grad_b")
    # The same on the device, and the flags.
    da, db = gpu.matmul_backward(gpu.asarray(g), gpu.asarray(a), gpu.asarray(b), grad_b=False)
    assert db is None and isinstance(da, gpu.GpuArray)
    np.testing.assert_allclose(da.numpy(), ga, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("batch,n_in,n_out", [(1, 1, 1), (17, 63, 65), (65, 3, 129), (5, 129, 1)])
def test_linear_forward_and_backward(layout, with_bias, batch, n_in, n_out, rng):
    x = f32(rng, batch, n_in)
    w = f32(rng, *((n_in, n_out) if layout == "in_out" else (n_out, n_in)))
    bias = f32(rng, n_out) if with_bias else None
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    w_io = w64 if layout == "in_out" else w64.T
    ref = x64 @ w_io + (0 if bias is None else bias.astype(np.float64))
    mag = np.abs(x64) @ np.abs(w_io) + (0 if bias is None else np.abs(bias))
    y = gpu.linear(x, w, bias, weight_layout=layout)
    close(y, mag, ref, n_in, "linear")
    close(y, mag, matgrad.linear(x, w, bias, weight_layout=layout).astype(np.float64), 2 * n_in, "vs CPU")

    g = f32(rng, batch, n_out)
    gx, gw, gb = gpu.linear_backward(g, x, w, weight_layout=layout)
    cx, cw, cb = matgrad.linear_backward(g.astype(np.float64), x64, w64, weight_layout=layout)
    mx, mw, mb = matgrad.linear_backward(np.abs(g).astype(np.float64), np.abs(x64), np.abs(w64), weight_layout=layout)
    close(gx, mx, cx, n_out, "grad_x")
    close(gw, mw, cw, batch, "grad_weight")
    close(gb, mb, cb, batch, "grad_bias")
    assert gw.shape == w.shape


def test_linear_on_device_with_leading_dims_and_flags(rng):
    x, w, bias = f32(rng, 2, 3, 10), f32(rng, 4, 10), f32(rng, 4)
    dx, dw, db = gpu.asarray(x), gpu.asarray(w), gpu.asarray(bias)
    y = gpu.linear(dx, dw, db, weight_layout="out_in")
    assert isinstance(y, gpu.GpuArray) and y.shape == (2, 3, 4)
    np.testing.assert_allclose(y.numpy(), matgrad.linear(x, w, bias, weight_layout="out_in"), rtol=1e-5, atol=1e-5)
    gx, gw, gb = gpu.linear_backward(y, dx, dw, weight_layout="out_in", grad_x=False)
    assert gx is None and gw.shape == (4, 10) and gb.shape == (4,)
    cx, cw, cb = matgrad.linear_backward(y.numpy(), x, w, weight_layout="out_in")
    np.testing.assert_allclose(gw.numpy(), cw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb.numpy(), cb, rtol=1e-5, atol=1e-5)


def test_shape_errors_match_the_cpu_path(rng):
    a, b = f32(rng, 3, 4), f32(rng, 5, 2)
    for func in (gpu.matmul, matgrad.matmul):
        with pytest.raises(ValueError, match=r"shapes \(3, 4\) and \(5, 2\) are not aligned"):
            func(a, b)
    with pytest.raises(ValueError, match="does not have enough dimensions"):
        gpu.matmul(np.float32(1.0), b)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        gpu.matmul(f32(rng, 2, 3, 4), f32(rng, 3, 4, 2))
    x, w = f32(rng, 8, 3), f32(rng, 4, 5)
    msgs = []
    for mod in (gpu, matgrad):
        with pytest.raises(ValueError) as info:
            mod.linear(x, w)
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1] and "(8, 3)" in msgs[0]
    with pytest.raises(ValueError, match="weight_layout"):
        gpu.linear(x, w, weight_layout="nope")
    with pytest.raises(ValueError, match="bias of shape"):
        gpu.linear(f32(rng, 8, 4), w, f32(rng, 4))
    with pytest.raises(ValueError, match="grad_y has shape"):
        gpu.linear_backward(f32(rng, 8, 4), f32(rng, 8, 4), w)
    with pytest.raises(ValueError, match="grad_out has shape"):
        gpu.matmul_backward(f32(rng, 3, 3), f32(rng, 3, 4), f32(rng, 4, 2))


def test_type_errors(rng):
    a = f32(rng, 3, 4)
    with pytest.raises(TypeError, match="float32"):
        gpu.matmul(a.astype(np.float64), a.T)
    with pytest.raises(TypeError, match="GpuArrays"):
        gpu.matmul(gpu.asarray(a), a.T)
    with pytest.raises(TypeError, match="GpuArrays"):
        gpu.linear(gpu.asarray(a), gpu.asarray(a.T), np.zeros(3, np.float32))
    # Lists have no dtype of their own: taken as float32.
    np.testing.assert_allclose(gpu.matmul([[1.0, 2.0]], [[3.0], [4.0]]), [[11.0]])


def test_too_large_for_the_device_is_a_value_error():
    limit = matgrad._matgrad.gpu_max_buffer_bytes()
    with pytest.raises(ValueError, match="largest storage buffer"):
        matgrad._matgrad.gpu_zeros(limit // 4 + 1)


def test_import_matgrad_does_not_touch_the_gpu():
    import subprocess
    import sys

    code = "import sys, matgrad; assert 'matgrad.gpu' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"


def test_a_build_without_the_feature_explains_itself(monkeypatch):
    monkeypatch.delattr(matgrad._matgrad, "gpu_gemm")
    assert not gpu.is_available()
    with pytest.raises(RuntimeError, match="feature 'gpu'"):
        gpu.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
