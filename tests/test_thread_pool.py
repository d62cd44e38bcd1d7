"""matgrad on the threads of torch's OpenMP runtime (``matgrad.set_thread_pool("openmp")``,
chosen by ``import matgrad.torch``) against its own: the same bits for every path and thread
count, the choice made at import and by MATGRAD_THREAD_POOL, the errors, concurrent callers (a
forked child on either pool: test_faults.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import matgrad  # noqa: E402
import matgrad.torch  # noqa: E402, F401  (loads torch's libgomp, if it has one)

OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()
needs_openmp = pytest.mark.skipif(not OPENMP, reason="this torch does not compute on OpenMP")


def run_python(code: str, env_extra: dict | None = None, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATGRAD_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def products(rng, dtype):
    """One call of each path of the core: vector, thin, small, packed, batched, broadcast,
    and the linear layer and matmul backward."""
    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    x, w, b, g = r(64, 784), r(256, 784), r(256), r(64, 256)
    a, bb, gc = r(300, 500), r(500, 200), r(300, 200)
    cases = [
        (r(1024, 1024), r(1024)), (r(1024), r(1024, 1024)), (r(8, 4096), r(4096, 8)),
        (r(40, 40), r(40, 40)), (a, bb), (r(64, 32, 32), r(64, 32, 32)), (r(64, 32, 32), r(32, 32)),
    ]
    out = [matgrad.matmul(p, q) for p, q in cases]
    out.append(matgrad.linear(x, w, b, weight_layout="out_in"))
    out += list(matgrad.linear_backward(g, x, w, weight_layout="out_in"))
    out += list(matgrad.matmul_backward(gc, a, bb))
    return out


@needs_openmp
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_on_either_pool_and_any_thread_count(dtype, restore_num_threads):
    results = {}
    for pool in ("matgrad", "openmp"):
        matgrad.set_thread_pool(pool) if pool == "matgrad" else matgrad.torch._share_torch_threads()
        assert matgrad.get_thread_pool() == pool
        for threads in (1, 2, 3):
            matgrad.set_num_threads(threads)
            assert matgrad.get_thread_pool() == pool, "set_num_threads keeps the pool"
            results[pool, threads] = products(np.random.default_rng(7), dtype)
    reference = results["matgrad", 1]
    for key, got in results.items():
        for i, (g, want) in enumerate(zip(got, reference)):
            assert np.array_equal(g, want), f"{key}: product {i} differs from one thread's"


@needs_openmp
def test_set_thread_pool_keeps_the_thread_count(restore_num_threads):
    matgrad.set_num_threads(3)
    matgrad.torch._share_torch_threads()
    assert (matgrad.get_thread_pool(), matgrad.get_num_threads()) == ("openmp", 3)
    matgrad.set_thread_pool("matgrad")
    assert (matgrad.get_thread_pool(), matgrad.get_num_threads()) == ("matgrad", 3)


def test_bad_pools_are_refused_and_change_nothing(restore_num_threads):
    before = matgrad.get_thread_pool()
    with pytest.raises(ValueError, match="pool must be 'matgrad' or 'openmp', got 'omp'"):
        matgrad.set_thread_pool("omp")
    with pytest.raises(TypeError, match="pool must be a str, got int"):
        matgrad.set_thread_pool(1)
    with pytest.raises(TypeError, match="library must be a str or None, got bytes"):
        matgrad.set_thread_pool("openmp", library=b"libgomp")
    with pytest.raises(RuntimeError, match="no GNU OpenMP runtime .*'/no/such/dir/'"):
        matgrad.set_thread_pool("openmp", library="/no/such/dir/")
    assert matgrad.get_thread_pool() == before


def test_without_a_loaded_libgomp_openmp_is_a_runtime_error():
    proc = run_python("""
        import matgrad
        try:
            matgrad.set_thread_pool("openmp")
        except RuntimeError as e:
            print("RuntimeError:", e)
        print(matgrad.get_thread_pool())
    """)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeError: set_thread_pool: no GNU OpenMP runtime (libgomp) in this process" in proc.stdout
    assert proc.stdout.split()[-1] == "matgrad"


THREAD_NAMES = """
    import os, sys, numpy as np
    import matgrad
    print(matgrad.get_thread_pool())
    import matgrad.torch, torch
    matgrad.set_num_threads(2)
    a = np.ones((512, 512), np.float32)
    for _ in range(3):
        c = matgrad.matmul(a, a)
    assert (c == 512).all()
    names = {open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")}
    print(matgrad.get_thread_pool(), os.path.dirname(torch.__file__) in matgrad._matgrad.get_thread_pool()[1] if matgrad.get_thread_pool() == "openmp" else "-", any(n.startswith("matgrad-") for n in names))
"""


@needs_openmp
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_importing_matgrad_torch_moves_the_threads_to_torchs_team():
    proc = run_python(THREAD_NAMES)
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.strip().splitlines()
    # Before: matgrad's own pool; after: torch's libgomp, and no worker of matgrad's started.
    assert before == "matgrad"
    assert after == "openmp True False", after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
def test_matgrad_thread_pool_env_keeps_matgrads_own_threads():
    proc = run_python(THREAD_NAMES, {"MATGRAD_THREAD_POOL": "matgrad"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == ["matgrad", "matgrad - True"]


def test_a_bad_matgrad_thread_pool_env_is_a_value_error():
    proc = run_python("import matgrad.torch", {"MATGRAD_THREAD_POOL": "tbb"})
    assert proc.returncode != 0
    assert "ValueError: MATGRAD_THREAD_POOL must be 'matgrad' or 'openmp', got 'tbb'" in proc.stderr


@needs_openmp
def test_callers_on_several_threads_at_once_each_get_their_products(restore_num_threads):
    # Each calling thread is the master of its own libgomp team.
    import concurrent.futures

    matgrad.torch._share_torch_threads()
    matgrad.set_num_threads(2)
    rng = np.random.default_rng(3)
    pairs = [(rng.standard_normal((200, 300)), rng.standard_normal((300, 150))) for _ in range(8)]
    want = [matgrad.matmul(a, b) for a, b in pairs]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for _ in range(5):
            got = list(ex.map(lambda p: matgrad.matmul(*p), pairs))
            assert all(np.array_equal(g, w) for g, w in zip(got, want))
