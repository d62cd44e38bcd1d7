"""Shared fixtures for the matgrad test suite.

matgrad is imported lazily inside fixtures so that a broken build shows up as
errors in the tests that need it rather than as a collection crash here.
"""

import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id: reproducible per test,
    different between tests."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture
def restore_num_threads():
    """Give a test freedom to call matgrad.set_num_threads; the thread count
    in force before the test is put back afterwards."""
    import matgrad

    before = matgrad.get_num_threads()
    try:
        yield before
    finally:
        matgrad.set_num_threads(before)


def pytest_configure(config):
    # Markers used by NumPy's test module, which test_numpy_peer.py imports
    # (NumPy registers them in its own conftest.py, which is not loaded here).
    for marker, doc in (
        ("slow", "Tests that are very slow."),
        ("slow_pypy", "Tests that are very slow on pypy."),
        ("leaks_references", "Tests that are known to leak references."),
        ("valgrind_error", "Tests that are known to error under valgrind."),
    ):
        config.addinivalue_line("markers", f"{marker}: {doc}")


@pytest.fixture(autouse=True)
def thread_pool(request):
    """The tests of matgrad.torch run on torch's OpenMP team, as importing matgrad.torch sets
    it up; every other test on matgrad's own threads, as ``import matgrad`` leaves them
    (collecting the torch tests imports matgrad.torch, which moves the whole process)."""
    import sys

    import matgrad

    torch_module = sys.modules.get("matgrad.torch")
    if request.module.__name__.startswith("test_torch") and torch_module is not None:
        if matgrad.get_thread_pool() == "matgrad":
            torch_module._share_torch_threads()
    elif matgrad.get_thread_pool() != "matgrad":
        matgrad.set_thread_pool("matgrad")
    yield
