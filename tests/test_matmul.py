"""Tests for ``matgrad.matmul``: it must behave like ``np.matmul``.

Float results (float32/float64) come from matgrad's own GEMM, so they are
compared with a float64 NumPy reference under a forward error bound derived
from the arithmetic (see ``assert_matmul_close``).  Every other result dtype is
delegated to NumPy and must be *identical* to ``np.matmul``'s result.
"""

import concurrent.futures
import fractions
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import matgrad

KERNEL_NAMES = ("avx512", "avx2", "neon", "generic")

# Sizes around the edges of micro-kernel tiles (6, 8, 12, 14, 16, 24, 32, 48,
# 64 in the register blocks of the usual AVX-512/AVX2/NEON kernels).
EDGE_SIZES = (1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 23, 24, 25,
              31, 32, 33, 47, 48, 49, 63, 64, 65)
SMALL_SIZES = (0, 1, 2, 3)
FLOAT_DTYPES = (np.float32, np.float64)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def error_bound(a, b, result_dtype, c=3.0):
    """Return ``(ref, tol)`` for ``a @ b`` computed in ``result_dtype``.

    A dot product of length k computed in floating point with unit roundoff u
    satisfies |fl(x.y) - x.y| <= gamma_k |x|.|y| with gamma_k = k u / (1 - k u)
    (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), whatever
    the summation order or FMA use; rounding the result to the output dtype
    adds at most u |x.y|.  So elementwise

        |C - C_exact| <= c * max(k, 1) * eps(dtype) * (|A| @ |B|)

    with eps = 2u and a small c also absorbing the float64 reference's own
    error (which has the same form with eps(float64)).
    """
    a64 = np.asarray(a).astype(np.float64)
    b64 = np.asarray(b).astype(np.float64)
    ref = np.matmul(a64, b64)
    mag = np.matmul(np.abs(a64), np.abs(b64))
    k = a64.shape[-1]
    tol = c * max(k, 1) * np.finfo(result_dtype).eps * mag
    return ref, tol


def assert_within_bound(got, a, b, c=3.0, what="matmul"):
    """Values of ``got`` against the float64 reference of ``a @ b``."""
    got_arr = np.asarray(got)
    ref, tol = error_bound(a, b, got_arr.dtype, c)
    assert got_arr.shape == np.shape(ref), (got_arr.shape, np.shape(ref))
    err = np.abs(got_arr.astype(np.float64) - ref)
    ok = err <= tol  # False where got is NaN
    if not np.all(ok):
        bad = np.argwhere(~np.atleast_1d(ok))[:5]
        flat_got = np.atleast_1d(got_arr)
        flat_ref = np.atleast_1d(ref)
        flat_tol = np.atleast_1d(tol)
        lines = [
            f"{what}: {np.count_nonzero(~ok)} of {ok.size} elements outside "
            f"the error bound; a{np.shape(a)} {np.asarray(a).dtype}, "
            f"b{np.shape(b)} {np.asarray(b).dtype}"
        ]
        for idx in bad:
            idx = tuple(idx)
            lines.append(f"  at {idx}: got {flat_got[idx]!r}, "
                         f"ref {flat_ref[idx]!r}, tol {flat_tol[idx]!r}")
        raise AssertionError("\n".join(lines))


def assert_matmul_close(got, a, b, c=3.0):
    """``got`` must look like ``np.matmul(a, b)`` (type, dtype, shape) and its
    values must lie within the error bound of the exact product."""
    expected = np.matmul(a, b)
    assert type(got) is type(expected), (type(got), type(expected))
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert np.shape(got) == np.shape(expected), (np.shape(got), np.shape(expected))
    assert expected.dtype in (np.float32, np.float64)
    assert_within_bound(got, a, b, c)


def assert_identical_to_numpy(got, expected):
    """Exact agreement with np.matmul: type, dtype, shape and every value."""
    assert type(got) is type(expected), (type(got), type(expected))
    if isinstance(expected, (np.ndarray, np.generic)):
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        got_a, exp_a = np.asarray(got), np.asarray(expected)
        if exp_a.dtype.kind in "fc":
            # identical bits, NaNs included
            assert np.array_equal(got_a, exp_a, equal_nan=True), (got, expected)
            assert np.array_equal(np.signbit(got_a.real), np.signbit(exp_a.real))
            if exp_a.dtype.char not in "gG":  # long double storage has padding
                assert got_a.tobytes() == exp_a.tobytes(), (got, expected)
        else:
            assert np.array_equal(got_a, exp_a), (got, expected)
    else:  # object dtype scalar results are plain Python objects
        assert got == expected, (got, expected)


def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def make_operand(rng, shape, dtype, transpose=False, steps=(1, 1)):
    """A random array of ``shape`` whose memory layout is not C-contiguous:

    ``transpose`` stores the last two axes swapped; ``steps`` are slicing
    steps (possibly negative) applied to the last two stored axes (the last
    one only for 1-D)."""
    shape = tuple(shape)
    nd = len(shape)
    stored = list(shape)
    if transpose and nd >= 2:
        stored[-1], stored[-2] = stored[-2], stored[-1]
    steps = tuple(steps)[-min(nd, 2):] if nd else ()
    big = list(stored)
    slices = [slice(None)] * nd
    for i, step in enumerate(steps):
        ax = nd - len(steps) + i
        big[ax] = stored[ax] * abs(step)
        slices[ax] = slice(None, None, step)
    arr = randn(rng, big, dtype)[tuple(slices)]
    if transpose and nd >= 2:
        arr = np.swapaxes(arr, -1, -2)
    assert arr.shape == shape, (arr.shape, shape)
    return arr


def run_python(code, *args, env_extra=None, timeout=120):
    """Run ``code`` in a fresh interpreter with the matgrad env vars reset."""
    env = dict(os.environ)
    for key in ("MATGRAD_KERNEL", "MATGRAD_NUM_THREADS"):
        env.pop(key, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code, *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------
# 1. correctness against the float64 reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_tiny_shapes_all_combinations(dtype, rng):
    for m in SMALL_SIZES:
        for k in SMALL_SIZES:
            for n in SMALL_SIZES:
                a = randn(rng, (m, k), dtype)
                b = randn(rng, (k, n), dtype)
                assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("m", EDGE_SIZES)
def test_tile_edge_shapes(dtype, m, rng):
    for n in EDGE_SIZES:
        for k in (1, 7, 16, 33):
            a = randn(rng, (m, k), dtype)
            b = randn(rng, (k, n), dtype)
            assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("k", (0, 2, 11, 12, 13, 15, 16, 17, 31, 32, 33,
                               47, 48, 49, 255, 256, 257, 385))
def test_k_edges(dtype, k, rng):
    for m, n in ((1, 1), (13, 17), (33, 47), (49, 31)):
        a = randn(rng, (m, k), dtype)
        b = randn(rng, (k, n), dtype)
        assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype,m,k,n", [
    (np.float32, 200, 300, 257),
    (np.float64, 200, 300, 257),
    (np.float32, 513, 129, 700),
    (np.float64, 257, 385, 130),
    (np.float32, 1, 3000, 1),
    (np.float64, 1, 700, 513),
    (np.float32, 700, 513, 1),
    (np.float64, 1000, 2, 999),
    (np.float32, 97, 1029, 67),
])
def test_larger_shapes(dtype, m, k, n, rng):
    a = randn(rng, (m, k), dtype)
    b = randn(rng, (k, n), dtype)
    assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_values_of_mixed_magnitude(dtype, rng):
    # Rows/columns scaled over many orders of magnitude: the elementwise bound
    # (not a norm-wise one) catches errors in small entries.
    a = randn(rng, (37, 29), dtype) * np.logspace(-8, 8, 37)[:, None].astype(dtype)
    b = randn(rng, (29, 41), dtype) * np.logspace(6, -6, 41)[None, :].astype(dtype)
    assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_exact_integer_products(dtype, rng):
    # Small integers: every partial sum is exact, so the result is exact.
    a = rng.integers(-8, 9, size=(45, 70)).astype(dtype)
    b = rng.integers(-8, 9, size=(70, 19)).astype(dtype)
    got = matgrad.matmul(a, b)
    assert got.dtype == dtype
    assert np.array_equal(got, (a.astype(np.int64) @ b.astype(np.int64)).astype(dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_identity(dtype, rng):
    a = randn(rng, (35, 35), dtype)
    eye = np.eye(35, dtype=dtype)
    assert np.array_equal(matgrad.matmul(a, eye), a)
    assert np.array_equal(matgrad.matmul(eye, a), a)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_and_inf_propagate(dtype, rng):
    a = randn(rng, (19, 23), dtype)
    b = np.abs(randn(rng, (23, 21), dtype)) + 1  # finite, positive, nonzero
    a[3, 5] = np.nan
    a[7, 11] = np.inf
    a[7, 12] = 1.0
    c = matgrad.matmul(a, b)
    assert np.all(np.isnan(c[3]))
    assert np.all(np.isposinf(c[7]))
    rest = np.delete(c, [3, 7], axis=0)
    assert np.all(np.isfinite(rest))
    # inf * 0 is NaN (no skipping of zero multiplicands on the GEMM path)
    a2 = randn(rng, (4, 4), dtype)
    b2 = randn(rng, (4, 4), dtype)
    a2[1, 2] = np.inf
    b2[2, :] = 0.0
    c2 = matgrad.matmul(a2, b2)
    assert np.all(np.isnan(c2[1]))
    assert np.all(np.isfinite(np.delete(c2, 1, axis=0)))


# --------------------------------------------------------------------------
# 2. strides and layouts
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("ta", (False, True))
@pytest.mark.parametrize("tb", (False, True))
def test_transposed_views(dtype, ta, tb, rng):
    for m, k, n in ((1, 1, 1), (13, 17, 11), (33, 16, 47), (64, 65, 3)):
        a = make_operand(rng, (m, k), dtype, transpose=ta)
        b = make_operand(rng, (k, n), dtype, transpose=tb)
        assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("steps_a,steps_b", [
    ((2, 3), (1, 1)),
    ((1, 1), (3, 2)),
    ((2, 3), (3, 2)),
    ((-1, 1), (1, 1)),
    ((1, -1), (-1, -1)),
    ((-2, 3), (2, -3)),
])
def test_slices_with_steps(dtype, steps_a, steps_b, rng):
    for m, k, n in ((5, 7, 3), (17, 33, 16), (48, 13, 49)):
        for ta, tb in ((False, False), (True, True)):
            a = make_operand(rng, (m, k), dtype, transpose=ta, steps=steps_a)
            b = make_operand(rng, (k, n), dtype, transpose=tb, steps=steps_b)
            assert_matmul_close(matgrad.matmul(a, b), a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_negative_strides(dtype, rng):
    a = randn(rng, (33, 17), dtype)
    b = randn(rng, (17, 19), dtype)
    for aa, bb in ((a[::-1], b), (a, b[::-1]), (a[:, ::-1], b[::-1, ::-1]),
                   (a[::-1, ::-1], b[::-1, ::-1]), (a.T[::-1].T, b.T[:, ::-1].T)):
        assert_matmul_close(matgrad.matmul(aa, bb), aa, bb)
    batch = randn(rng, (3, 9, 10), dtype)
    assert_matmul_close(matgrad.matmul(batch[::-1], b[:10]), batch[::-1], b[:10])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_broadcast_zero_stride_views(dtype, rng):
    row = randn(rng, (23,), dtype)
    col = randn(rng, (31,), dtype)
    b = randn(rng, (23, 17), dtype)
    a_rows = np.broadcast_to(row, (31, 23))            # stride 0 on axis 0
    a_cols = np.broadcast_to(col[:, None], (31, 23))   # stride 0 on axis 1
    scalar = np.broadcast_to(np.asarray(1.5, dtype), (31, 23))  # all strides 0
    for a in (a_rows, a_cols, scalar):
        assert 0 in a.strides
        assert_matmul_close(matgrad.matmul(a, b), a, b)
        bt = np.ascontiguousarray(b.T)
        assert_matmul_close(matgrad.matmul(bt, a.T), bt, a.T)
    # stride-0 batch axis
    a3 = np.broadcast_to(randn(rng, (12, 23), dtype), (4, 12, 23))
    b3 = np.broadcast_to(randn(rng, (1, 23, 5), dtype), (4, 23, 5))
    assert_matmul_close(matgrad.matmul(a3, b3), a3, b3)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_fortran_order(dtype, rng):
    for m, k, n in ((13, 17, 11), (48, 49, 47), (1, 5, 1)):
        a = np.asfortranarray(randn(rng, (m, k), dtype))
        b = np.asfortranarray(randn(rng, (k, n), dtype))
        assert_matmul_close(matgrad.matmul(a, b), a, b)
        assert_matmul_close(matgrad.matmul(a, np.ascontiguousarray(b)), a, b)
        out = np.empty((m, n), dtype, order="F")
        res = matgrad.matmul(a, b, out=out)
        assert res is out
        assert_within_bound(out, a, b)


def _check_out_view(a, b, big, view_index):
    """Run matmul into big[view_index]; check it and that nothing else moved."""
    sentinel = big.copy()
    out = big[view_index]
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert_within_bound(out, a, b)
    mask = np.ones(big.shape, bool)
    mask[view_index] = False
    assert np.array_equal(big[mask], sentinel[mask], equal_nan=True), \
        "matmul wrote outside the out view"


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 3, 7), (17, 33, 13),
                                   (48, 16, 49), (33, 0, 12)])
def test_noncontiguous_out(dtype, m, k, n, rng):
    a = randn(rng, (m, k), dtype)
    b = randn(rng, (k, n), dtype)
    big = np.full((2 * m, 2 * n + 1), 12345.0, dtype)
    _check_out_view(a, b, big, np.s_[::2, 1::2])
    big = np.full((m + 3, n + 4), -7.0, dtype)
    _check_out_view(a, b, big, np.s_[2:m + 2, 1:n + 1])
    big = np.full((m, 3 * n), 99.0, dtype)
    _check_out_view(a, b, big, np.s_[::-1, ::-3])
    bigT = np.full((2 * n, m), 5.0, dtype)
    sentinel = bigT.copy()
    out = bigT[::2].T  # transposed, strided
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert_within_bound(out, a, b)
    assert np.array_equal(bigT[1::2], sentinel[1::2])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_noncontiguous_batched_out(dtype, rng):
    a = randn(rng, (3, 7, 9), dtype)
    b = randn(rng, (9, 5), dtype)
    big = np.full((6, 9, 10), 3.0, dtype)
    _check_out_view(a, b, big, np.s_[::2, 1:8, ::2])
    big = np.full((3, 5, 7, 2), 3.0, dtype)  # out[..., 0] transposed
    sentinel = big.copy()
    out = np.swapaxes(big[..., 0], -1, -2)
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert_within_bound(out, a, b)
    assert np.array_equal(big[..., 1], sentinel[..., 1])


# --------------------------------------------------------------------------
# 3. beta = 0: C is never read
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_out_prefilled_with_nan_is_overwritten(dtype, rng):
    shapes = [(m, k, n) for m in (1, 3, 13, 17, 33, 49) for n in (1, 2, 15, 31, 65)
              for k in (0, 1, 16)]
    shapes += [(200, 300, 257), (129, 1, 513)]
    for m, k, n in shapes:
        a = randn(rng, (m, k), dtype)
        b = randn(rng, (k, n), dtype)
        out = np.full((m, n), np.nan, dtype)
        res = matgrad.matmul(a, b, out=out)
        assert res is out
        assert not np.isnan(out).any(), f"NaN leaked from out for {(m, k, n)}"
        assert_within_bound(out, a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strided_nan_out_is_overwritten(dtype, rng):
    for m, k, n in ((7, 5, 9), (17, 31, 33), (2, 0, 3)):
        a = randn(rng, (m, k), dtype)
        b = randn(rng, (k, n), dtype)
        big = np.full((2 * m, 3 * n), np.nan, dtype)
        out = big[::2, ::3]
        matgrad.matmul(a, b, out=out)
        assert not np.isnan(out).any()
        assert np.isnan(big[1::2]).all() and np.isnan(big[:, 1::3]).all()
        assert_within_bound(out, a, b)
        # also as a transposed (column-major) out
        outT = np.full((n, m), np.nan, dtype).T
        matgrad.matmul(a, b, out=outT)
        assert not np.isnan(outT).any()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_nan_out_batched_and_vector(dtype, rng):
    a = randn(rng, (4, 13, 9), dtype)
    b = randn(rng, (9,), dtype)
    out = np.full((4, 13), np.nan, dtype)
    matgrad.matmul(a, b, out=out)
    assert not np.isnan(out).any()
    assert_within_bound(out, a, b)
    out = np.full((), np.nan, dtype)
    res = matgrad.matmul(b, b, out=out)
    assert res is out
    assert not np.isnan(out)
    assert_within_bound(out, b, b)


# --------------------------------------------------------------------------
# empty dimensions
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sa,sb", [
    ((0, 3), (3, 4)), ((3, 0), (0, 4)), ((3, 4), (4, 0)), ((0, 0), (0, 0)),
    ((0, 5, 3), (3, 4)), ((2, 3, 0), (0, 4)), ((0,), (0,)), ((0,), (0, 5)),
    ((5, 0), (0,)), ((2, 0, 3), (1, 3, 4)), ((0, 1, 3, 2), (4, 2, 5)),
])
def test_empty_dims(dtype, sa, sb):
    a = np.ones(sa, dtype)
    b = np.ones(sb, dtype)
    got = matgrad.matmul(a, b)
    expected = np.matmul(a, b)
    assert_identical_to_numpy(got, expected)
    if np.ndim(expected) > 0:
        out = np.full(expected.shape, np.nan, dtype)
        assert matgrad.matmul(a, b, out=out) is out
        assert np.array_equal(out, expected)


# --------------------------------------------------------------------------
# 4. 1-D operands and batch broadcasting
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_vector_rules(dtype, rng):
    for m, k, n in ((1, 1, 1), (5, 7, 3), (17, 33, 16), (2, 64, 49)):
        v = randn(rng, (k,), dtype)
        w = randn(rng, (k,), dtype)
        A = randn(rng, (m, k), dtype)
        B = randn(rng, (k, n), dtype)
        r = matgrad.matmul(v, B)
        assert r.shape == (n,)
        assert_matmul_close(r, v, B)
        r = matgrad.matmul(A, v)
        assert r.shape == (m,)
        assert_matmul_close(r, A, v)
        r = matgrad.matmul(v, w)
        assert type(r) is np.dtype(dtype).type  # a NumPy scalar, like np.matmul
        assert_matmul_close(r, v, w)
        # strided vectors
        vs = make_operand(rng, (k,), dtype, steps=(-2,))
        assert_matmul_close(matgrad.matmul(vs, B), vs, B)
        assert_matmul_close(matgrad.matmul(A, vs), A, vs)
        assert_matmul_close(matgrad.matmul(vs, vs), vs, vs)


def test_vector_vector_scalar_type_matches_numpy():
    for dt in (np.float32, np.float64):
        v = np.arange(1, 4, dtype=dt)
        got = matgrad.matmul(v, v)
        expected = np.matmul(v, v)
        assert type(got) is type(expected) is dt
        assert got == expected == 14


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sa,sb", [
    ((2, 1, 4, 5), (3, 5, 6)),
    ((1, 4, 5), (3, 5, 6)),
    ((3, 4, 5), (5, 6)),
    ((4, 5), (3, 5, 6)),
    ((3, 1, 4, 5), (1, 2, 5, 6)),
    ((2, 3, 17, 9), (2, 3, 9, 13)),
    ((1, 1, 4, 5), (5, 6)),
    ((0, 4, 5), (5, 6)),
    ((2, 0, 4, 5), (1, 5, 6)),
])
def test_batch_broadcasting(dtype, sa, sb, rng):
    a = randn(rng, sa, dtype)
    b = randn(rng, sb, dtype)
    got = matgrad.matmul(a, b)
    assert got.shape == np.matmul(a, b).shape
    assert_matmul_close(got, a, b)


def test_batch_broadcasting_shape_example(rng):
    a = randn(rng, (2, 1, 4, 5))
    b = randn(rng, (3, 5, 6))
    got = matgrad.matmul(a, b)
    assert got.shape == (2, 3, 4, 6)
    for i in range(2):
        for j in range(3):
            assert_within_bound(got[i, j], a[i, 0], b[j])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sa,sb", [
    ((5,), (2, 3, 5, 4)),
    ((2, 3, 4, 5), (5,)),
    ((7,), (3, 7, 1)),
    ((3, 1, 7), (7,)),
    ((0,), (4, 0, 3)),
    ((4, 2, 0), (0,)),
])
def test_batched_with_vectors(dtype, sa, sb, rng):
    a = randn(rng, sa, dtype)
    b = randn(rng, sb, dtype)
    assert_matmul_close(matgrad.matmul(a, b), a, b)


def test_array_likes(rng):
    a = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    b = [[1.0, -1.0, 0.5], [2.0, 0.0, 0.25]]
    assert_identical_to_numpy(matgrad.matmul(a, b), np.matmul(a, b))
    assert_identical_to_numpy(matgrad.matmul(tuple(map(tuple, a)), np.array(b)),
                              np.matmul(tuple(map(tuple, a)), np.array(b)))
    assert_identical_to_numpy(matgrad.matmul([1.0, 2.0], [3.0, 4.0]),
                              np.matmul([1.0, 2.0], [3.0, 4.0]))
    # integer lists are delegated and stay integer
    assert_identical_to_numpy(matgrad.matmul([[1, 2]], [[3], [4]]),
                              np.matmul([[1, 2]], [[3], [4]]))
    # an object exposing __array__
    class Wrapper:
        def __init__(self, arr):
            self.arr = arr

        def __array__(self, dtype=None, copy=None):
            return self.arr if dtype is None else self.arr.astype(dtype)

    x = randn(rng, (4, 6), np.float32)
    y = randn(rng, (6, 3), np.float32)
    assert_matmul_close(matgrad.matmul(Wrapper(x), Wrapper(y)), x, y)


@pytest.mark.parametrize("da,db", [
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.float32, np.float64),
    (np.float64, np.float32),
    (np.int32, np.float32),   # -> float64
    (np.float32, np.int64),   # -> float64
    (np.int8, np.float32),    # -> float32
    (np.int16, np.float32),   # -> float32
    (np.uint8, np.float64),
    (np.bool_, np.float32),
    (np.float16, np.float32),  # -> float32
    (np.float64, np.float16),
    (np.int64, np.float64),
])
def test_float_result_dtypes(da, db, rng):
    def make(shape, dt):
        if np.dtype(dt).kind == "b":
            return rng.integers(0, 2, size=shape).astype(dt)
        if np.dtype(dt).kind in "iu":
            return rng.integers(0, 9, size=shape).astype(dt)
        return randn(rng, shape, dt)

    for sa, sb in (((13, 17), (17, 9)), ((17,), (17, 9)), ((13, 17), (17,)),
                   ((17,), (17,)), ((2, 5, 17), (17, 3))):
        a = make(sa, da)
        b = make(sb, db)
        expected = np.matmul(a, b)
        assert expected.dtype in (np.float32, np.float64)
        got = matgrad.matmul(a, b)
        assert got.dtype == expected.dtype
        assert_matmul_close(got, a, b)


DELEGATED_PAIRS = [
    (np.int32, np.int32), (np.int64, np.int64), (np.int8, np.int16),
    (np.uint8, np.uint8), (np.uint64, np.int8), (np.bool_, np.bool_),
    (np.bool_, np.int32), (np.complex64, np.complex64),
    (np.complex128, np.complex128), (np.float32, np.complex64),
    (np.complex64, np.float64), (np.float16, np.float16),
    (np.longdouble, np.longdouble), (np.float64, np.longdouble),
    (np.clongdouble, np.float32), (object, object), (object, np.float64),
]


@pytest.mark.parametrize("da,db", DELEGATED_PAIRS)
def test_delegated_dtypes_are_identical(da, db, rng):
    def make(shape, dt):
        dt = np.dtype(dt)
        if dt.kind == "b":
            return rng.integers(0, 2, size=shape).astype(dt)
        if dt.kind in "iu":
            # large enough to overflow int8/uint8 like NumPy does
            return rng.integers(0, 100, size=shape).astype(dt)
        if dt.kind == "c":
            return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
        if dt.kind == "O":
            return rng.integers(-5, 6, size=shape).astype(object)
        return rng.standard_normal(shape).astype(dt)

    for sa, sb in (((7, 13), (13, 5)), ((13,), (13, 5)), ((7, 13), (13,)),
                   ((13,), (13,)), ((2, 1, 3, 13), (4, 13, 2)), ((0, 3), (3, 2)),
                   ((3, 0), (0, 2))):
        a = make(sa, da)
        b = make(sb, db)
        expected = np.matmul(a, b)
        got = matgrad.matmul(a, b)
        assert_identical_to_numpy(got, expected)


def test_object_fractions_exact():
    F = fractions.Fraction
    a = np.array([[F(1, 3), F(2, 7)], [F(-5, 11), F(1, 2)]], dtype=object)
    b = np.array([F(3, 5), F(7, 13)], dtype=object)
    assert_identical_to_numpy(matgrad.matmul(a, a), np.matmul(a, a))
    assert_identical_to_numpy(matgrad.matmul(a, b), np.matmul(a, b))
    got = matgrad.matmul(b, b)
    assert type(got) is F and got == np.matmul(b, b)


def test_delegated_dtype_with_out(rng):
    a = rng.integers(-9, 9, size=(4, 6)).astype(np.int32)
    b = rng.integers(-9, 9, size=(6, 3)).astype(np.int32)
    big = np.zeros((8, 3), np.int64)
    out = big[::2]
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert np.array_equal(out, np.matmul(a, b))
    assert not big[1::2].any()
    c = (a + 1j).astype(np.complex128)
    out = np.empty((4, 3), np.complex128)
    assert matgrad.matmul(c, b, out=out) is out
    assert np.array_equal(out, np.matmul(c, b))


# --------------------------------------------------------------------------
# out dtype casting (same_kind, like NumPy)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("da,dout", [
    (np.float64, np.float32),   # same kind, narrowing: allowed
    (np.float32, np.float64),   # widening
    (np.float64, np.float16),
    (np.float32, np.complex64),  # float into complex: safe
    (np.float64, np.complex128),
    (np.float64, ">f8"),        # non-native byte order out
    (np.float32, ">f4"),
])
def test_out_dtype_allowed_casts(da, dout, rng):
    a = randn(rng, (9, 14), da)
    b = randn(rng, (14, 11), da)
    expected = np.matmul(a, b, out=np.empty((9, 11), dout))
    out = np.full((9, 11), 7, dout)
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert out.dtype == np.dtype(dout)
    # values: the float result rounded to the out dtype
    out_eps = np.finfo(np.dtype(dout)).eps
    ref, tol = error_bound(a, b, da)
    tol = tol + 2 * out_eps * np.abs(ref)
    assert np.all(np.abs(out.astype(np.complex128) - ref) <= tol)
    assert np.all(np.abs(out.astype(np.complex128) - expected) <= 2 * tol)


def test_out_positional_and_keyword(rng):
    a = randn(rng, (5, 2))
    b = randn(rng, (2, 2))
    out1 = np.zeros((5, 2))
    res1 = matgrad.matmul(a, b, out1)
    assert res1 is out1
    out2 = np.zeros((5, 2))
    res2 = matgrad.matmul(a, b, out=out2)
    assert res2 is out2
    assert np.array_equal(out1, out2)
    assert_within_bound(out1, a, b)
    # out=None is the default
    assert_matmul_close(matgrad.matmul(a, b, out=None), a, b)


def test_out_with_extra_broadcast_dims_like_numpy(rng):
    # NumPy allows out to have extra leading (broadcast) dimensions: the
    # product is written into every slice.
    a = randn(rng, (3, 4))
    b = randn(rng, (4, 5))
    expected = np.matmul(a, b, out=np.zeros((2, 3, 5)))
    out = np.zeros((2, 3, 5))
    assert matgrad.matmul(a, b, out=out) is out
    assert_within_bound(out[0], a, b)
    assert_within_bound(out[1], a, b)
    assert np.allclose(out, expected)


# --------------------------------------------------------------------------
# 6. errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((2, 3), (4, 5)),
    ((3,), (4,)),
    ((2, 3), (4,)),
    ((4,), (3, 2)),
    ((2, 2, 3), (2, 4, 5)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_core_dim_mismatch(sa, sb, dtype):
    a = np.ones(sa, dtype)
    b = np.ones(sb, dtype)
    with pytest.raises(ValueError):
        np.matmul(a, b)
    with pytest.raises(ValueError) as info:
        matgrad.matmul(a, b)
    msg = str(info.value)
    assert str(sa) in msg and str(sb) in msg, msg


@pytest.mark.parametrize("sa,sb", [
    ((2, 3, 4), (5, 4, 6)),
    ((2, 2, 1), (3, 1, 2)),
    ((3, 2, 3, 4), (3, 4, 4)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_batch_broadcast_mismatch(sa, sb, dtype):
    a = np.ones(sa, dtype)
    b = np.ones(sb, dtype)
    with pytest.raises(ValueError):
        np.matmul(a, b)
    with pytest.raises(ValueError) as info:
        matgrad.matmul(a, b)
    msg = str(info.value)
    assert str(sa) in msg and str(sb) in msg, msg


@pytest.mark.parametrize("a,b", [
    (np.float64(2.0), np.ones((2, 3))),
    (np.ones((2, 3)), np.float64(2.0)),
    (np.ones(()), np.ones(3)),
    (np.ones(3, np.float32), np.ones((), np.float32)),
    (np.ones((), np.int64), np.ones((), np.int64)),
    (2.0, np.ones((2, 2))),
])
def test_zero_d_operands(a, b):
    with pytest.raises(ValueError):
        np.matmul(a, b)
    with pytest.raises(ValueError) as info:
        matgrad.matmul(a, b)
    msg = str(info.value)
    assert str(np.shape(a)) in msg and str(np.shape(b)) in msg, msg


@pytest.mark.parametrize("out_shape", [(2, 3), (3, 2), (2,), (2, 2, 3), (1, 2, 3)])
def test_out_wrong_shape(out_shape, rng):
    a = randn(rng, (2, 4))
    b = randn(rng, (4, 2))
    out = np.zeros(out_shape)
    with pytest.raises(ValueError):
        np.matmul(a, b, out=out)
    with pytest.raises(ValueError):
        matgrad.matmul(a, b, out=out)
    assert not out.any(), "out was written although the call failed"


def test_out_wrong_shape_batched_and_vector(rng):
    a = randn(rng, (2, 3, 4))
    b = randn(rng, (4, 5))
    for out_shape in ((1, 3, 5), (3, 5, 2), (2, 3, 4)):
        with pytest.raises(ValueError):
            matgrad.matmul(a, b, out=np.zeros(out_shape))
    v = randn(rng, (4,))
    with pytest.raises(ValueError):
        matgrad.matmul(a, v, out=np.zeros((2, 4)))
    # empty batch: out may not broadcast to size 0
    arr = np.ones((0, 1, 1))
    with pytest.raises(ValueError):
        matgrad.matmul(arr, arr, out=np.ones((1, 1, 1)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("out_dtype", [np.int32, np.int64, np.bool_, np.uint8])
def test_out_unsafe_cast_is_type_error(dtype, out_dtype, rng):
    a = randn(rng, (3, 4), dtype)
    b = randn(rng, (4, 2), dtype)
    out = np.zeros((3, 2), out_dtype)
    with pytest.raises(TypeError):
        np.matmul(a, b, out=out)
    with pytest.raises(TypeError):
        matgrad.matmul(a, b, out=out)
    assert not out.any()


def test_out_complex_result_into_float_is_type_error(rng):
    a = randn(rng, (3, 4)).astype(np.complex128)
    b = randn(rng, (4, 2))
    with pytest.raises(TypeError):
        matgrad.matmul(a, b, out=np.zeros((3, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_out_read_only(dtype):
    a = np.ones((3, 4), dtype)
    b = np.ones((4, 2), dtype)
    out = np.zeros((3, 2), dtype)
    out.setflags(write=False)
    with pytest.raises(ValueError):
        np.matmul(a, b, out=out)
    with pytest.raises(ValueError):
        matgrad.matmul(a, b, out=out)
    assert not out.any()
    # a broadcast view is read-only too
    with pytest.raises(ValueError):
        matgrad.matmul(a, b, out=np.broadcast_to(np.zeros(2, dtype), (3, 2)))


def test_out_not_an_array():
    a = np.ones((2, 2))
    with pytest.raises(TypeError):
        np.matmul(a, a, out=[[0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(TypeError):
        matgrad.matmul(a, a, out=[[0.0, 0.0], [0.0, 0.0]])


def test_signature_is_positional_only_for_operands():
    a = np.ones((2, 2))
    with pytest.raises(TypeError):
        matgrad.matmul(a=a, b=a)
    with pytest.raises(TypeError):
        matgrad.matmul(a)


# --------------------------------------------------------------------------
# 7. out overlapping the inputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("n", (1, 3, 17, 33, 64))
def test_out_is_an_input(dtype, n, rng):
    a0 = randn(rng, (n, n), dtype)
    b0 = randn(rng, (n, n), dtype)
    fresh = matgrad.matmul(a0, b0)

    _, tol = error_bound(a0, b0, dtype)

    a = a0.copy()
    res = matgrad.matmul(a, b0, out=a)
    assert res is a
    assert_within_bound(a, a0, b0)
    # same as computing into fresh memory (both within the bound, so within
    # twice it of each other; bitwise equality is not required)
    assert np.all(np.abs(a.astype(np.float64) - fresh) <= 2 * tol)

    b = b0.copy()
    assert matgrad.matmul(a0, b, out=b) is b
    assert_within_bound(b, a0, b0)

    a = a0.copy()
    assert matgrad.matmul(a, a, out=a) is a
    assert_within_bound(a, a0, a0)

    a = a0.copy()
    out = a.T
    assert matgrad.matmul(a, b0, out=out) is out
    assert_within_bound(out, a0, b0)

    a = a0.copy()
    out = a[::-1, ::-1]
    assert matgrad.matmul(a, b0, out=out) is out
    assert_within_bound(out, a0, b0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_out_partially_overlaps_inputs(dtype, rng):
    m, k, n = 9, 11, 7
    buf0 = randn(rng, (400,), dtype)
    buf = buf0.copy()
    a = buf[:m * k].reshape(m, k)
    b = buf[50:50 + k * n].reshape(k, n)
    out = buf[40:40 + m * n].reshape(m, n)  # overlaps the end of a and b
    a0 = buf0[:m * k].reshape(m, k).copy()
    b0 = buf0[50:50 + k * n].reshape(k, n).copy()
    assert matgrad.matmul(a, b, out=out) is out
    assert_within_bound(out, a0, b0)
    # elements of buf outside out untouched
    assert np.array_equal(buf[:40], buf0[:40])
    assert np.array_equal(buf[40 + m * n:], buf0[40 + m * n:])


def test_out_overlap_batched_like_numpy():
    # from NumPy's TestMethods.test_matmul_out, float64 version
    a = np.arange(18.0).reshape(2, 3, 3)
    b = np.matmul(a, a)
    c = matgrad.matmul(a, a, out=a)
    assert c is a
    assert np.array_equal(c, b)
    a = np.arange(18.0).reshape(2, 3, 3)
    c = matgrad.matmul(a, a, out=a[::-1, ...])
    assert c.base is a.base
    assert np.array_equal(c, b)


# --------------------------------------------------------------------------
# 8. byte order and read-only inputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_non_native_byte_order(dtype, rng):
    a = randn(rng, (17, 23), np.dtype(dtype))
    b = randn(rng, (23, 13), np.dtype(dtype))
    sw = "<" if sys.byteorder == "big" else ">"
    a_sw = a.astype(sw + dtype)
    b_sw = b.astype(sw + dtype)
    assert not a_sw.dtype.isnative
    for aa, bb in ((a_sw, b), (a, b_sw), (a_sw, b_sw), (a_sw[::2], b_sw), (a_sw[:, ::-1], b_sw[::-1]),
                   (b_sw.T, a_sw.T)):
        got = matgrad.matmul(aa, bb)
        expected = np.matmul(aa, bb)
        assert got.dtype == expected.dtype and got.dtype.isnative
        assert_matmul_close(got, aa, bb)
    v = a_sw[0]
    assert_matmul_close(matgrad.matmul(v, v), v, v)
    # mixed with the other float type
    assert_matmul_close(matgrad.matmul(a_sw.astype(sw + "f4"), b),
                        a_sw.astype(sw + "f4"), b)


def test_non_native_byte_order_delegated():
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    b = np.arange(8, dtype=">i8").reshape(4, 2)
    assert_identical_to_numpy(matgrad.matmul(a, b), np.matmul(a, b))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_read_only_inputs(dtype, rng):
    a = randn(rng, (19, 21), dtype)
    b = randn(rng, (21, 8), dtype)
    a.setflags(write=False)
    b.setflags(write=False)
    assert_matmul_close(matgrad.matmul(a, b), a, b)
    assert_matmul_close(matgrad.matmul(b.T, a.T), b.T, a.T)
    assert_matmul_close(matgrad.matmul(a[0], b), a[0], b)
    # a read-only buffer from bytes
    raw = np.frombuffer(a.tobytes(), dtype=dtype).reshape(a.shape)
    assert not raw.flags.writeable
    assert_matmul_close(matgrad.matmul(raw, b), raw, b)


def _unaligned(arr):
    """A copy of ``arr`` (C order) whose data pointer is not aligned."""
    raw = np.zeros(arr.nbytes + 1, np.uint8)[1:]
    out = raw.view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_unaligned_inputs_and_out(dtype, rng):
    a = randn(rng, (17, 23), dtype)
    b = randn(rng, (23, 9), dtype)
    ua, ub = _unaligned(a), _unaligned(b)
    assert not ua.flags.aligned and not ub.flags.aligned
    assert_matmul_close(matgrad.matmul(ua, ub), a, b)
    assert_matmul_close(matgrad.matmul(ua.T.T, b), a, b)
    out = _unaligned(np.full((17, 9), np.nan, dtype))
    assert not out.flags.aligned
    assert matgrad.matmul(a, b, out=out) is out
    assert_within_bound(out, a, b)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strides_not_multiple_of_itemsize(dtype, rng):
    # fields of a packed structured array: strides of 5 or 9 bytes
    rec = np.zeros((13, 11), dtype=[("x", dtype), ("pad", np.int8)])
    rec["x"] = randn(rng, (13, 11), dtype)
    a = rec["x"]
    assert a.strides[1] % a.itemsize != 0
    b = randn(rng, (11, 7), dtype)
    assert_matmul_close(matgrad.matmul(a, b), a, b)
    assert_matmul_close(matgrad.matmul(b.T, a.T), b.T, a.T)
    recout = np.zeros((13, 7), dtype=[("pad", np.int8), ("y", dtype)])
    out = recout["y"]
    assert matgrad.matmul(a, b, out=out) is out
    assert_within_bound(out, a, b)
    assert not recout["pad"].any()


def test_inputs_not_modified(rng):
    a = randn(rng, (33, 17), np.float32)
    b = randn(rng, (17, 29), np.float32)
    a0, b0 = a.copy(), b.copy()
    matgrad.matmul(a, b)
    matgrad.matmul(a, b, out=np.empty((33, 29), np.float32))
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


# --------------------------------------------------------------------------
# 9. threads
# --------------------------------------------------------------------------

def test_set_get_num_threads(restore_num_threads):
    assert isinstance(matgrad.get_num_threads(), int)
    assert matgrad.get_num_threads() >= 1
    for n in (1, 2, 3, 1):
        matgrad.set_num_threads(n)
        assert matgrad.get_num_threads() == n


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_num_threads_rejects_non_positive(bad, restore_num_threads):
    matgrad.set_num_threads(2)
    with pytest.raises(ValueError):
        matgrad.set_num_threads(bad)
    assert matgrad.get_num_threads() == 2


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_results_independent_of_thread_count(dtype, rng, restore_num_threads):
    cases = [
        (randn(rng, (300, 257), dtype), randn(rng, (257, 513), dtype)),
        (randn(rng, (4, 61, 70), dtype), randn(rng, (70, 83), dtype)),
        (randn(rng, (513, 300), dtype).T, randn(rng, (513, 7), dtype)[::-1]),
    ]
    for a, b in cases:
        results = []
        for n in (1, 2, 3):
            matgrad.set_num_threads(n)
            results.append(matgrad.matmul(a, b))
        assert_matmul_close(results[0], a, b)
        for r in results[1:]:
            assert r.tobytes() == results[0].tobytes(), \
                "result depends on the number of threads"


def test_concurrent_calls_from_python_threads(rng, restore_num_threads):
    matgrad.set_num_threads(2)
    cases = []
    for i in range(8):
        dtype = FLOAT_DTYPES[i % 2]
        m, k, n = 20 + 13 * i, 31 + 7 * i, 17 + 11 * i
        cases.append((randn(rng, (m, k), dtype), randn(rng, (k, n), dtype)))

    def work(i):
        a, b = cases[i]
        results = []
        for rep in range(5):
            if rep % 2:
                out = np.full((a.shape[0], b.shape[1]), np.nan, a.dtype)
                matgrad.matmul(a, b, out=out)
                results.append(out)
            else:
                results.append(matgrad.matmul(a, b))
        return results

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        all_results = list(pool.map(work, range(8)))
    for (a, b), results in zip(cases, all_results):
        for r in results:
            assert_matmul_close(r, a, b)
        for r in results[1:]:
            assert r.tobytes() == results[0].tobytes()


def test_num_threads_env_var():
    proc = run_python("import matgrad; print(matgrad.get_num_threads())",
                      env_extra={"MATGRAD_NUM_THREADS": "3"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"
    proc = run_python("import matgrad; print(matgrad.get_num_threads())",
                      env_extra={"MATGRAD_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


# --------------------------------------------------------------------------
# 10. each SIMD kernel path
# --------------------------------------------------------------------------

def test_kernel_introspection():
    avail = matgrad.available_kernels()
    assert isinstance(avail, list) and avail
    assert set(avail) <= set(KERNEL_NAMES)
    assert "generic" in avail
    assert len(set(avail)) == len(avail)
    assert matgrad.simd_kernel() in avail


KERNEL_CHECK = textwrap.dedent(r"""
    import sys
    import numpy as np
    import matgrad

    name = sys.argv[1]
    assert matgrad.simd_kernel() == name, (matgrad.simd_kernel(), name)
    rng = np.random.default_rng(1234)

    def check(c, a, b):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = a64 @ b64
        tol = 3 * max(a.shape[-1], 1) * np.finfo(c.dtype).eps * (np.abs(a64) @ np.abs(b64))
        assert c.shape == ref.shape and c.dtype == np.result_type(a, b)
        bad = ~(np.abs(c - ref) <= tol)
        assert not bad.any(), (name, a.shape, b.shape, a.dtype, np.argwhere(bad)[:3])

    sizes = [(1, 1, 1), (3, 2, 5), (7, 9, 13), (17, 16, 33), (31, 47, 49),
             (48, 64, 24), (65, 3, 15), (100, 130, 90), (257, 300, 129), (5, 0, 4)]
    for dt in (np.float32, np.float64):
        for m, k, n in sizes:
            for ta, tb in ((False, False), (True, False), (False, True)):
                a = rng.standard_normal((k, m) if ta else (m, k)).astype(dt)
                b = rng.standard_normal((n, k) if tb else (k, n)).astype(dt)
                a = a.T if ta else a
                b = b.T if tb else b
                check(matgrad.matmul(a, b), a, b)
            out = np.full((2 * m, n), np.nan, dt)[::2]
            matgrad.matmul(a, b, out=out)
            check(out, a, b)
        v = rng.standard_normal(37).astype(dt)
        M = rng.standard_normal((37, 19)).astype(dt)
        check(matgrad.matmul(v, M), v, M)
        check(matgrad.matmul(M.T, v), M.T, v)
        A3 = rng.standard_normal((3, 1, 9, 37)).astype(dt)
        check(matgrad.matmul(A3, np.stack([M, M])), A3, np.stack([M, M]))
    # threads do not change the result on this kernel either
    a = rng.standard_normal((150, 170)).astype(np.float32)
    b = rng.standard_normal((170, 190)).astype(np.float32)
    matgrad.set_num_threads(1)
    r1 = matgrad.matmul(a, b)
    matgrad.set_num_threads(2)
    r2 = matgrad.matmul(a, b)
    assert r1.tobytes() == r2.tobytes()
    print("OK", name)
""")


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_each_available_kernel(name):
    if name not in matgrad.available_kernels():
        pytest.skip(f"this CPU does not support the {name} kernel")
    proc = run_python(KERNEL_CHECK, name, env_extra={"MATGRAD_KERNEL": name})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"OK {name}"


def test_default_kernel_is_best_available():
    # without MATGRAD_KERNEL the fastest supported kernel is used
    proc = run_python("import matgrad; print(matgrad.simd_kernel(), "
                      "' '.join(matgrad.available_kernels()))")
    assert proc.returncode == 0, proc.stderr
    chosen, *avail = proc.stdout.split()
    preference = [k for k in KERNEL_NAMES if k in avail]
    assert chosen == preference[0]


@pytest.mark.parametrize("value", ["bogus", "AVX9000", "Avx2"])
def test_unknown_kernel_name_env(value):
    # matgrad refuses to import with an unknown MATGRAD_KERNEL (a ValueError
    # naming the value and the known kernels) rather than silently falling
    # back: a test run that asked for a kernel must not run another one.
    proc = run_python("import matgrad; print(matgrad.simd_kernel())",
                      env_extra={"MATGRAD_KERNEL": value})
    assert proc.returncode != 0, f"import succeeded with kernel {proc.stdout.strip()!r}"
    assert "ValueError" in proc.stderr, proc.stderr
    assert repr(value) in proc.stderr or value in proc.stderr, proc.stderr
    for known in KERNEL_NAMES:
        assert known in proc.stderr, proc.stderr


def test_unsupported_kernel_name_env():
    unsupported = [k for k in KERNEL_NAMES if k not in matgrad.available_kernels()]
    if not unsupported:
        pytest.skip("this CPU supports every kernel")
    for name in unsupported:
        proc = run_python("import matgrad; print(matgrad.simd_kernel())",
                          env_extra={"MATGRAD_KERNEL": name})
        # never run (or claim) a kernel the CPU cannot execute
        assert proc.returncode != 0, f"import succeeded with kernel {proc.stdout.strip()!r}"
        assert "ValueError" in proc.stderr and name in proc.stderr, proc.stderr
        assert "not supported" in proc.stderr, proc.stderr


def test_empty_kernel_env_means_default():
    proc = run_python("import matgrad; print(matgrad.simd_kernel(), matgrad.available_kernels()[0])",
                      env_extra={"MATGRAD_KERNEL": ""})
    assert proc.returncode == 0, proc.stderr
    chosen, best = proc.stdout.split()
    assert chosen == best


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_num_threads_env(value):
    proc = run_python("import matgrad; print(matgrad.get_num_threads())",
                      env_extra={"MATGRAD_NUM_THREADS": value})
    assert proc.returncode != 0, f"import succeeded with {proc.stdout.strip()} threads"
    assert "ValueError" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------
# 11. property-based tests
# --------------------------------------------------------------------------

@st.composite
def matmul_problems(draw):
    """Two float operands (shapes, dtypes, layouts) that np.matmul accepts."""
    dims = st.integers(0, 40)
    m, k, n = draw(dims), draw(dims), draw(dims)
    da = draw(st.sampled_from(FLOAT_DTYPES))
    db = draw(st.sampled_from(FLOAT_DTYPES)) if draw(st.booleans()) else da
    a_vec = draw(st.integers(0, 6)) == 0
    b_vec = draw(st.integers(0, 6)) == 0
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    if batch and draw(st.integers(0, 10)) == 0:
        batch = (0,) + batch[1:]

    def batch_for_operand():
        keep = draw(st.integers(0, len(batch)))
        dims_ = batch[len(batch) - keep:]
        return tuple(1 if draw(st.booleans()) and d != 0 else d for d in dims_)

    a_batch = () if a_vec else batch_for_operand()
    b_batch = () if b_vec else batch_for_operand()
    a_shape = (k,) if a_vec else a_batch + (m, k)
    b_shape = (k,) if b_vec else b_batch + (k, n)
    step = st.sampled_from([1, 1, 1, 2, 3, -1, -2])
    layout_a = (draw(st.booleans()), (draw(step), draw(step)))
    layout_b = (draw(st.booleans()), (draw(step), draw(step)))
    zero_stride_a = draw(st.booleans()) and not a_vec and bool(batch)
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(a_shape=a_shape, b_shape=b_shape, da=da, db=db,
                layout_a=layout_a, layout_b=layout_b, batch=batch,
                zero_stride_a=zero_stride_a, seed=seed)


def build_problem(p):
    rng = np.random.default_rng(p["seed"])
    a = make_operand(rng, p["a_shape"], p["da"], p["layout_a"][0], p["layout_a"][1])
    b = make_operand(rng, p["b_shape"], p["db"], p["layout_b"][0], p["layout_b"][1])
    if p["zero_stride_a"]:
        full = np.broadcast_shapes(a.shape[:-2], b.shape[:-2] if b.ndim > 1 else ())
        a = np.broadcast_to(a, full + a.shape[-2:])
    return a, b


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(matmul_problems())
def test_property_matches_numpy(p):
    a, b = build_problem(p)
    got = matgrad.matmul(a, b)
    assert_matmul_close(got, a, b)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(matmul_problems(), st.sampled_from(["contiguous", "strided", "transposed"]))
def test_property_out_matches_numpy(p, out_kind):
    a, b = build_problem(p)
    expected = np.matmul(a, b)
    shape = np.shape(expected)
    dtype = expected.dtype
    if out_kind == "strided" and len(shape) >= 1:
        big = np.full(shape[:-1] + (2 * shape[-1] + 1,), np.nan, dtype)
        out = big[..., 1::2]
    elif out_kind == "transposed" and len(shape) >= 2:
        big = np.full(shape[:-2] + (shape[-1], shape[-2]), np.nan, dtype)
        out = np.swapaxes(big, -1, -2)
        big = None
    else:
        big = None
        out = np.full(shape, np.nan, dtype)
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert_within_bound(out, a, b)
    if big is not None:
        assert np.isnan(big[..., 0::2]).all(), "wrote outside the out view"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12),
       st.sampled_from([np.int8, np.int32, np.int64, np.uint16, np.bool_,
                        np.complex64, np.float16]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_property_delegated_dtypes_identical(m, k, n, dtype, transpose, seed):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "fc":
        a = rng.standard_normal((m, k)).astype(dt)
        b = rng.standard_normal((k, n)).astype(dt)
    else:
        a = rng.integers(0, 2 if dt.kind == "b" else 50, size=(m, k)).astype(dt)
        b = rng.integers(0, 2 if dt.kind == "b" else 50, size=(k, n)).astype(dt)
    if transpose:
        a, b = b.T, a.T
    assert_identical_to_numpy(matgrad.matmul(a, b), np.matmul(a, b))


# --------------------------------------------------------------------------
# 12. against torch.matmul
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("sa,sb", [
    ((17, 33), (33, 49)),
    ((128, 64), (64, 96)),
    ((3, 20, 30), (30, 10)),
    ((2, 1, 5, 7), (3, 7, 4)),
    ((33,), (33, 12)),
    ((12, 33), (33,)),
])
def test_against_torch(dtype, sa, sb, rng):
    torch = pytest.importorskip("torch")
    a = randn(rng, sa, dtype)
    b = randn(rng, sb, dtype)
    got = matgrad.matmul(a, b)
    expected_t = torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert got.shape == expected_t.shape
    assert got.dtype == expected_t.dtype
    assert_matmul_close(got, a, b)
    # both lie within the bound of the exact product, so within twice it of each other
    _, tol = error_bound(a, b, dtype)
    assert np.all(np.abs(got.astype(np.float64) - expected_t) <= 2 * tol)


@pytest.mark.parametrize("case", ["readonly+shapes", "cast+shapes", "cast+out-shape", "readonly+cast", "cast+0-d"])
def test_several_faults_raise_the_error_numpy_raises(case):
    # Found by the differential fuzzer: NumPy checks out= (writable, then casting) before it
    # looks at shapes; matgrad raised the shape's ValueError first.
    readonly = np.zeros((3, 2))
    readonly.flags.writeable = False
    readonly_int = np.zeros((3, 2), np.int32)
    readonly_int.flags.writeable = False
    a, b, out = {
        "readonly+shapes": (np.ones((3, 4)), np.ones((5, 2)), readonly),
        "cast+shapes": (np.ones((3, 4)), np.ones((5, 2)), np.zeros((3, 2), np.int32)),
        "cast+out-shape": (np.ones((3, 4)), np.ones((4, 2)), np.zeros((3, 3), np.int32)),
        "readonly+cast": (np.ones((3, 4)), np.ones((4, 2)), readonly_int),
        "cast+0-d": (np.float64(1.0), np.ones((4, 2)), np.zeros((3, 2), np.int32)),
    }[case]
    with pytest.raises((ValueError, TypeError)) as theirs:
        np.matmul(a, b, out=out)
    expected = ValueError if isinstance(theirs.value, ValueError) else TypeError
    with pytest.raises(expected) as ours:
        matgrad.matmul(a, b, out=out)
    assert ("read-only" in str(ours.value)) == ("read-only" in str(theirs.value)), (ours.value, theirs.value)


@pytest.mark.parametrize("dtype", [np.complex64, np.int64, np.float32])
def test_out_with_a_zero_stride_holds_a_product(dtype):
    # Found by the differential fuzzer: for the dtypes matgrad hands to NumPy, NumPy's BLAS
    # path given an out= with a zero stride writes nothing (OpenBLAS rejects incy = 0). Every
    # element of such an out is one memory location; it must end up holding one of the
    # products written to it.
    a = (np.arange(12).reshape(3, 4) % 5 - 2).astype(dtype)
    b = (np.arange(4) - 1).astype(dtype)
    buffer = np.full(4, 7, dtype)
    out = np.lib.stride_tricks.as_strided(buffer, (3,), (0,))
    assert matgrad.matmul(a, b, out=out) is out
    assert buffer[0] in set((a @ b).tolist()), (buffer, a @ b)
    assert list(buffer[1:]) == [7, 7, 7]
    # (and one of the wrong shape is still refused, not broadcast into: the campaign again)
    wide = np.lib.stride_tricks.as_strided(buffer, (3, 2), (0, buffer.itemsize))
    with pytest.raises(ValueError, match="out has shape"):
        matgrad.matmul(a, b[:, None], out=wide)
