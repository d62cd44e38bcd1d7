"""Faults: memory that cannot be had, processes forked after use, the thread count changed
while other threads compute. Each becomes a Python exception or a right answer, never an
abort or a hang."""

from __future__ import annotations

import importlib
import multiprocessing
import threading

import numpy as np
import pytest

import matgrad
from matgrad import _matgrad, nn


@pytest.fixture
def failing_allocations():
    """Scratch allocations of 64 KiB or more fail (fault injection in the core's allocator)."""
    _matgrad._fail_allocations_from(1 << 16)
    try:
        yield
    finally:
        _matgrad._fail_allocations_from(None)


def test_failed_scratch_allocation_is_a_memory_error(failing_allocations, restore_num_threads):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((512, 512)), rng.standard_normal((512, 512))
    x, w = rng.standard_normal((256, 512)).astype(np.float32), rng.standard_normal((512, 256)).astype(np.float32)
    params = {"W1": w, "b1": np.zeros(256, np.float32), "W2": w[:256, :10].copy(), "b2": np.zeros(10, np.float32)}
    calls = {
        "matmul": lambda: matgrad.matmul(a, b),
        "matmul (Python path)": lambda: matgrad.matmul(a, b.tolist()),
        "matmul_backward": lambda: matgrad.matmul_backward(a, a, b),
        "linear": lambda: matgrad.linear(x, w),
        "linear_backward": lambda: matgrad.linear_backward(x[:, :256], x, w),
        "mlp2_loss_and_grads": lambda: nn.mlp2_loss_and_grads(params, x, np.zeros(256, int)),
    }
    for threads in (1, 2):
        matgrad.set_num_threads(threads)
        for name, call in calls.items():
            with pytest.raises(MemoryError, match=r"could not allocate \d+ bytes"):
                call()
    # Nothing is left broken: with memory back, the same calls give the right answers.
    _matgrad._fail_allocations_from(None)
    np.testing.assert_allclose(matgrad.matmul(a, b), a @ b, rtol=1e-10, atol=1e-10)
    ga, gb = matgrad.matmul_backward(a, a, b)
    np.testing.assert_allclose(gb, a.T @ a, rtol=1e-10, atol=1e-10)


def test_small_products_need_no_scratch_and_still_work(failing_allocations):
    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(matgrad.matmul(a, a.T), a @ a.T)


def _child_product(queue):
    a = np.arange(256.0 * 256).reshape(256, 256) / 65536
    queue.put((matgrad.get_thread_pool(), float(np.abs(matgrad.matmul(a, a) - a @ a).max())))


def _use_pool(pool):
    """matgrad's own threads, or torch's OpenMP team (skipped without a torch on OpenMP)."""
    if pool == "matgrad":
        return matgrad.set_thread_pool("matgrad")
    torch = pytest.importorskip("torch")
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch does not compute on OpenMP")
    importlib.import_module("matgrad.torch")._share_torch_threads()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform")
@pytest.mark.parametrize("pool", ["matgrad", "openmp"])
def test_a_child_forked_after_use_computes(pool, restore_num_threads):
    # (libgomp's threads are not in the child; its next region would wait for them forever)
    _use_pool(pool)
    matgrad.set_num_threads(2)
    a = np.ones((512, 512))
    matgrad.matmul(a, a)  # the pool's workers exist (in the parent only, after the fork)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_product, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail(f"the forked child hung in matmul on the {pool} pool")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (pool, pytest.approx(0, abs=1e-9))


def test_set_num_threads_while_other_threads_compute(restore_num_threads):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
    want = matgrad.matmul(a, b)
    errors: list[str] = []
    stop = threading.Event()

    def compute():
        while not stop.is_set():
            got = matgrad.matmul(a, b)
            if not np.allclose(got, want, rtol=1e-12, atol=1e-12):
                errors.append("a wrong product")

    workers = [threading.Thread(target=compute) for _ in range(3)]
    for t in workers:
        t.start()
    for i in range(200):
        matgrad.set_num_threads(1 + i % 3)
    stop.set()
    for t in workers:
        t.join(60)
    assert not any(t.is_alive() for t in workers), "a computing thread hung"
    assert not errors, errors[:3]
