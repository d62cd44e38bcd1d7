"""The paths for small, thin, batched and vector products, on every kernel this CPU runs.

Each path is reached by the shape and strides that choose it (rust/core/src/gemm/plan.rs):
vector products (C a row or a column: dots or columns form), outer products (k = 1), thin
products along k (m or n at most 8, A's rows and B's columns along k, or at most 4 with
the short operand copied to run along k), a few rows of C against a big B (rows of B
streamed), small products in
place (masked edges), batches planned once (a shared B stacked into one product) and the
compiled call path itself. Values are checked against the float64 reference within the error
bound of a length-k dot product (test_matmul.error_bound); results that must not depend on the
thread count are compared bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import matgrad
from matgrad import _matgrad
from test_matmul import assert_matmul_close, assert_within_bound

FLOATS = (np.float32, np.float64)


@pytest.fixture(params=matgrad.available_kernels())
def kernel(request, restore_num_threads):
    """Runs the test on each kernel this CPU supports, then restores the fastest."""
    before = matgrad.simd_kernel()
    _matgrad.force_kernel(request.param)
    try:
        yield request.param
    finally:
        _matgrad.force_kernel(before)


def operand(rng, shape, dtype, layout):
    """A random array of ``shape`` stored as ``layout``: "C", "F" (its last two axes swapped in
    memory), "neg" (both last axes reversed) or "step" (every other element)."""
    shape = tuple(shape)
    if layout == "F" and len(shape) >= 2:
        return np.swapaxes(rng.standard_normal(shape[:-2] + shape[::-1][:2]).astype(dtype), -1, -2)
    if layout == "neg":
        return rng.standard_normal(shape).astype(dtype)[(Ellipsis,) + (slice(None, None, -1),) * min(len(shape), 2)]
    if layout == "step":
        big = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return big[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


SIZES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 49, 64, 97, 130)
KS = (1, 2, 7, 8, 16, 17, 33, 64, 130)
LAYOUTS = ("C", "F", "neg", "step")


def assert_same_bits_on_one_and_two_threads(a, b, what):
    """``a @ b`` into a NaN-filled ``out`` on one thread and on two: within the error bound,
    ``out`` returned, and the same bits both times (``what`` names the case)."""
    got = []
    for threads in (1, 2):
        matgrad.set_num_threads(threads)
        out = np.full(a.shape[:-1] + b.shape[-1:], np.nan, a.dtype)
        assert matgrad.matmul(a, b, out=out) is out
        assert_within_bound(out, a, b)
        got.append(out.tobytes())
    assert got[0] == got[1], what


@pytest.mark.parametrize("dtype", FLOATS)
def test_shapes_around_the_tiles(kernel, dtype, rng):
    for t, m in enumerate(SIZES):
        for s, n in enumerate(SIZES[t % 3::3]):
            k = KS[(t + s) % len(KS)]
            la, lb = LAYOUTS[(t + s) % 4], LAYOUTS[(t + 2 * s) % 4]
            a, b = operand(rng, (m, k), dtype, la), operand(rng, (k, n), dtype, lb)
            assert_matmul_close(matgrad.matmul(a, b), a, b)
            out = np.full((m, n), np.nan, dtype)
            assert matgrad.matmul(a, b, out=out) is out
            assert_within_bound(out, a, b)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_vector_products(kernel, dtype, layout, rng):
    for m, k in ((1, 1), (3, 17), (33, 8), (130, 64), (300, 1000)):
        A = operand(rng, (m, k), dtype, layout)
        x, y = operand(rng, (k,), dtype, "step" if layout == "step" else "C"), operand(rng, (m,), dtype, "C")
        for a, b in ((A, x), (y, A), (x, x), (A[:1], x), (A, x[:, None]), (y[None, :], A)):
            assert_matmul_close(matgrad.matmul(a, b), a, b)
        assert type(matgrad.matmul(x, x)) is type(np.matmul(x, x))


@pytest.mark.parametrize("dtype", FLOATS)
def test_thin_products_along_k(kernel, dtype, rng):
    # torch's X Wᵀ: X (short, k) row-major, Wᵀ a transposed row-major (long, k).
    for short in range(2, 9):
        for long_, k in ((9, 8), (70, 33), (257, 130)):
            x = operand(rng, (short, k), dtype, "C")
            w = operand(rng, (long_, k), dtype, "C")
            assert_matmul_close(matgrad.matmul(x, w.T), x, w.T)
            assert_matmul_close(matgrad.matmul(w, x.T), w, x.T)


@pytest.mark.parametrize("dtype", FLOATS)
def test_thin_products_with_few_columns(kernel, dtype, rng, restore_num_threads):
    # A row-major A @ B a few columns wide, B in every layout (copied to run along k where it
    # has at most 4 columns, k >= 128 and A >= 64 rows), and the transposed orientation; C
    # pre-filled with NaN; the same bits on one thread and on two.
    for short in (2, 3, 4, 5):
        for long_, k in ((64, 128), (63, 300), (300, 127), (257, 1000)):
            for t, layout in enumerate(LAYOUTS):
                a = operand(rng, (long_, k), dtype, "C")
                b = operand(rng, (k, short), dtype, layout)
                assert_same_bits_on_one_and_two_threads(a, b, (long_, k, short, layout))
                bt, at = b.T, operand(rng, (long_, k), dtype, LAYOUTS[(t + 1) % 4]).T
                assert_matmul_close(matgrad.matmul(bt, at), bt, at)


@pytest.mark.parametrize("dtype", FLOATS)
def test_few_rows_against_a_big_b(kernel, dtype, rng, restore_num_threads):
    # C 2…17 rows tall against a B with contiguous rows bigger than L2 (gemm/few_rows.rs: up
    # to 4 rows, up to 16 on AVX-512 past 4 MiB, in passes of 8): A in every layout, C
    # pre-filled with NaN, a linear layer's bias, the same bits on one thread and on two.
    for m in (2, 3, 4, 5, 8, 9, 16, 17):
        for t, (k, n) in enumerate(((600, 1030), (1100, 513), (2100, 130), (1030, 1100))):
            a = operand(rng, (m, k), dtype, LAYOUTS[(m + t) % 4])
            b = operand(rng, (k, n), dtype, "C")
            assert_same_bits_on_one_and_two_threads(a, b, (m, k, n))
            bias = rng.standard_normal(n).astype(dtype)
            y = matgrad.linear(a, b, bias)
            np.testing.assert_allclose(y, a.astype(np.float64) @ b + bias, rtol=0,
                                       atol=4 * k * np.finfo(dtype).eps * (np.abs(a) @ np.abs(b) + np.abs(bias)).max())


@pytest.mark.parametrize("dtype", FLOATS)
def test_outer_products(kernel, dtype, rng):
    for m, n in ((2, 2), (7, 15), (64, 100), (300, 49), (256, 784)):
        u, v = operand(rng, (m, 1), dtype, "C"), operand(rng, (1, n), dtype, "C")
        assert_matmul_close(matgrad.matmul(u, v), u, v)
        out = np.full((n, m), np.nan, dtype).T  # column-major C: the transposed product
        matgrad.matmul(u, v, out=out)
        assert_within_bound(out, u, v)


@pytest.mark.parametrize("dtype", FLOATS)
def test_batches(kernel, dtype, rng):
    for count, (m, k, n) in ((1000, (4, 4, 4)), (256, (16, 16, 16)), (64, (32, 32, 32)), (3, (130, 70, 90))):
        a, b = operand(rng, (count, m, k), dtype, "C"), operand(rng, (count, k, n), dtype, "C")
        assert_matmul_close(matgrad.matmul(a, b), a, b)
        w = operand(rng, (k, n), dtype, "C")
        assert_matmul_close(matgrad.matmul(a, w), a, w)  # a shared B: one product of all rows
        assert_matmul_close(matgrad.matmul(a[:, ::-1], w), a[:, ::-1], w)  # rows not stacked
        out = np.full((count, n, m), np.nan, dtype).transpose(0, 2, 1)
        matgrad.matmul(a, w, out=out)
        assert_within_bound(out, a, w)


TINY = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16)


@pytest.mark.parametrize("dtype", FLOATS)
def test_tiny_batches_on_every_layout(kernel, dtype, rng, restore_num_threads):
    # Batches of products at most 16 in every dimension (gemm/tiny.rs): around the vector
    # widths of every ISA, A in every layout, B and C rows contiguous or not (other paths),
    # a strided batch, a broadcast B that is not stacked, C pre-filled with NaN; the bits
    # equal each matrix's product on its own, on one thread or two.
    for t, m in enumerate(TINY):
        for s, n in enumerate(TINY[t % 2::2]):
            k = TINY[(t + 3 * s) % len(TINY)]
            la, lb = LAYOUTS[(t + s) % 4], LAYOUTS[(t + 2 * s + 1) % 4]
            count = 9 + t
            a = operand(rng, (2 * count, m, k), dtype, la)[::2]
            b = operand(rng, (count, k, n), dtype, lb)
            matgrad.set_num_threads(1 + (t + s) % 2)
            out = np.full((count, m, n), np.nan, dtype)
            assert matgrad.matmul(a, b, out=out) is out
            assert_within_bound(out, a, b)
            each = np.stack([matgrad.matmul(a[i], b[i]) for i in range(count)])
            assert out.tobytes() == each.tobytes(), (m, n, k, la, lb)
            shared = operand(rng, (k, n), dtype, lb)
            assert_within_bound(matgrad.matmul(a, shared), a, shared)


@pytest.mark.parametrize("dtype", FLOATS)
def test_tall_products_with_a_tiny_k(kernel, dtype, rng, restore_num_threads):
    # C with short rows (n <= 32) and k <= 8, m beyond 32 (gemm/tiny.rs, Path::Tall): every A
    # layout, B and C rows contiguous or not (other paths), C pre-filled with NaN; the same
    # bits on one thread and on two.
    shapes = [(33, 1, 2), (100, 8, 32), (1000, 3, 3), (257, 5, 17), (4099, 2, 16), (64, 7, 9), (40, 8, 33)]
    for t, (m, k, n) in enumerate(shapes):
        for la in LAYOUTS:
            lb = "C" if la != "step" else LAYOUTS[t % 4]
            a, b = operand(rng, (m, k), dtype, la), operand(rng, (k, n), dtype, lb)
            assert_same_bits_on_one_and_two_threads(a, b, (m, k, n, la, lb))


def _bits(x):
    return np.asarray(x).tobytes()


@pytest.mark.parametrize("dtype", FLOATS)
def test_parallel_paths_give_the_same_bits_on_any_thread_count(dtype, rng, restore_num_threads):
    A = operand(rng, (3001, 777), dtype, "C")
    x = operand(rng, (777,), dtype, "C")
    y = operand(rng, (3001,), dtype, "C")
    X = operand(rng, (6, 777), dtype, "C")
    u, v = operand(rng, (700, 1), dtype, "C"), operand(rng, (1, 900), dtype, "C")
    batch, w = operand(rng, (500, 8, 8), dtype, "C"), operand(rng, (500, 8, 8), dtype, "C")
    # small products in place on two threads (AVX-512 up to 160³), edges masked
    s, t = operand(rng, (131, 140), dtype, "C"), operand(rng, (140, 153), dtype, "C")
    cases = [(A, x), (y, A), (A.T, y), (X, A.T), (u, v), (batch, w), (s, t)]
    matgrad.set_num_threads(1)
    one = [_bits(matgrad.matmul(a, b)) for a, b in cases]
    for threads in (2, 3):
        matgrad.set_num_threads(threads)
        assert [_bits(matgrad.matmul(a, b)) for a, b in cases] == one, threads


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("m,k,n,rs", [(6, 5, 4, 2), (6, 5, 4, 1), (600, 50, 96, 40), (400, 300, 64, 48)])
def test_out_overlapping_itself_gives_numpys_result(dtype, m, k, n, rs, rng, restore_num_threads):
    # An as_strided out whose rows overlap (rows rs elements apart, n > rs columns): NumPy
    # computes into a temporary and copies; so must matgrad, on any number of threads (the
    # threads would otherwise race on the shared elements).
    a, b = operand(rng, (m, k), dtype, "C"), operand(rng, (k, n), dtype, "C")
    item = np.dtype(dtype).itemsize
    size = (m - 1) * rs + n
    want_buf, got_buf = np.zeros(size, dtype), np.zeros(size, dtype)
    want = np.lib.stride_tricks.as_strided(want_buf, (m, n), (rs * item, item))
    np.matmul(a, b, out=want)
    for threads in (1, 2):
        matgrad.set_num_threads(threads)
        got_buf[:] = 0
        got = np.lib.stride_tricks.as_strided(got_buf, (m, n), (rs * item, item))
        assert matgrad.matmul(a, b, out=got) is got
        # (within rounding of NumPy's own product: the two GEMMs may sum in other orders)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(got_buf, want_buf, rtol=4 * k * eps, atol=4 * k * eps * 10)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("layout", ("in_out", "out_in"))
def test_linear_layer_at_small_batches(dtype, layout, rng):
    n_in, n_out = 784, 256
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    w = operand(rng, (n_out, n_in) if layout == "out_in" else (n_in, n_out), dtype, "C") / 28
    wt = w.T if layout == "out_in" else w
    b = operand(rng, (n_out,), dtype, "C")
    for x in (operand(rng, (n_in,), dtype, "C"), operand(rng, (1, n_in), dtype, "C"), operand(rng, (8, n_in), dtype, "C")):
        y = matgrad.linear(x, w, b, weight_layout=layout)
        assert y.shape == x.shape[:-1] + (n_out,) and y.dtype == dtype
        np.testing.assert_allclose(y, x @ wt + b, **tol)
        g = operand(rng, y.shape, dtype, "C")
        gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout)
        g2, x2 = np.atleast_2d(g), np.atleast_2d(x)
        np.testing.assert_allclose(gx, (g2 @ wt.T).reshape(x.shape), **tol)
        np.testing.assert_allclose(gw, (x2.T @ g2).T if layout == "out_in" else x2.T @ g2, **tol)
        np.testing.assert_allclose(gb, g2.sum(0), **tol)
        none = matgrad.linear_backward(g, x, w, weight_layout=layout, grad_x=0, grad_bias=False)
        assert none[0] is None and none[2] is None
        np.testing.assert_allclose(none[1], gw, **tol)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("batch", ((), (3,), (2, 1, 3)))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matmul_backward_compiled_path(dtype, batch, layout, rng):
    """The compiled call (matrices, or stacks of one batch shape) gives the Python path's bits
    and the float64 gradients within a dot product's bound: ∂L/∂A = G Bᵀ, ∂L/∂B = Aᵀ G."""
    from matgrad import _grad

    for m, k, n in ((1, 1, 1), (4, 3, 5), (17, 33, 9), (64, 48, 80)):
        a = operand(rng, batch + (m, k), dtype, layout)
        b = operand(rng, batch + (k, n), dtype, layout)
        g = operand(rng, batch + (m, n), dtype, layout)
        ga, gb = matgrad.matmul_backward(g, a, b)
        assert ga.shape == a.shape and gb.shape == b.shape and ga.dtype == gb.dtype == dtype
        assert_within_bound(ga, g, np.swapaxes(b, -1, -2))
        assert_within_bound(gb, np.swapaxes(a, -1, -2), g)
        general = _grad.matmul_backward_general(g, a, b)
        np.testing.assert_array_equal(ga, general[0])
        np.testing.assert_array_equal(gb, general[1])
        only_b = matgrad.matmul_backward(g, a, b, grad_a=0, precision="highest")
        assert only_b[0] is None
        np.testing.assert_array_equal(only_b[1], gb)
        assert matgrad.matmul_backward(g, a, b, grad_b=None)[1] is None


def test_matmul_backward_calls_the_compiled_path_leaves_keep_their_answers(rng):
    g, a, b = (rng.standard_normal(s) for s in ((4, 5), (4, 3), (3, 5)))
    with pytest.raises(TypeError, match="unexpected keyword"):
        matgrad.matmul_backward(g, a, b, grad_c=True)
    with pytest.raises(ValueError, match=r"matmul_backward"):
        matgrad.matmul_backward(g[:, :4], a, b)
    with pytest.raises(ValueError, match=r"matmul_backward"):
        matgrad.matmul_backward(rng.standard_normal((2, 4, 5)), rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 3, 5)))
    with pytest.raises(TypeError):
        matgrad.matmul_backward(g, a, b, precision="medium")  # float64 at a bfloat16 precision
    # Mixed dtypes, lists and broadcast batches go to the Python path and keep their answers.
    ga, gb = matgrad.matmul_backward(g.astype(np.float32), a, b.tolist())
    assert ga.dtype == gb.dtype == np.float64
    ga3, gb3 = matgrad.matmul_backward(np.stack([g, g]), np.stack([a, a]), b)
    assert gb3.shape == b.shape
    np.testing.assert_allclose(gb3, 2 * (a.T @ g), rtol=1e-12)
    np.testing.assert_allclose(ga3[1], g @ b.T, rtol=1e-12)
