"""README's bad-input table, row by row: every class of bad input and what it gets (the
exception's type and the shape of its message). The table's rows and CASES below are the same
set of ids (checked), so a row cannot go untested and a case cannot go undocumented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import matgrad
from matgrad import gpu, nn

ROOT = Path(__file__).resolve().parents[1]
f32 = np.ones((3, 4), np.float32)
f64 = np.ones((3, 4))


def _readonly(shape):
    a = np.zeros(shape)
    a.flags.writeable = False
    return a


def _mlp(**change):
    params = {"W1": np.ones((4, 5)), "b1": np.zeros(5), "W2": np.ones((5, 3)), "b2": np.zeros(3)}
    X, y, reg = np.ones((2, 4)), np.array([0, 2]), 0.0
    params.update({k: v for k, v in change.items() if k in params})
    return lambda: nn.mlp2_loss_and_grads(params, change.get("X", X), change.get("y", y), change.get("reg", reg))


def _environment(name, value, module="matgrad"):
    """Importing ``module`` with an environment variable set: the error the import raises."""
    def run():
        if module == "matgrad.torch":
            pytest.importorskip("torch")
        env = {**os.environ, name: value}
        r = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        last = r.stderr.strip().splitlines()[-1] if r.returncode else ""
        kind, _, message = last.partition(": ")
        raise {"ValueError": ValueError, "TypeError": TypeError}.get(kind, RuntimeError)(message or "imported")
    return run


def _gpu(fn):
    def run():
        if not gpu.is_available():
            pytest.skip("no GPU adapter (install lavapipe: mesa-vulkan-drivers)")
        return fn()
    return run


def _too_big_for_the_device():
    # An (n, 1) @ (1, n) product whose result is one float past the device's largest buffer.
    import math

    n = math.isqrt(matgrad._matgrad.gpu_max_buffer_bytes() // 4) + 1
    return gpu.matmul(np.ones((n, 1), np.float32), np.ones((1, n), np.float32))


#: id -> (callable, exception type, pattern its message must match)
CASES = {
    # shapes
    "core-dims": (lambda: matgrad.matmul(f64, f64), ValueError, r"shapes \(3, 4\) and \(3, 4\) are not aligned"),
    "0-d operand": (lambda: matgrad.matmul(np.float64(2), f64), ValueError, r"does not have enough dimensions"),
    "batch-broadcast": (lambda: matgrad.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 2))), ValueError,
                        r"batch dimensions of shapes \(2, 3, 4\) and \(3, 4, 2\) cannot be broadcast"),
    "grad-shape": (lambda: matgrad.matmul_backward(np.ones((3, 5)), f64, np.ones((4, 2))), ValueError,
                   r"matmul_backward: grad_out has shape \(3, 5\).*\(3, 2\)"),
    "linear-in": (lambda: matgrad.linear(np.ones((2, 5)), f64), ValueError, r"linear: x of shape \(2, 5\)"),
    "linear-weight-rank": (lambda: matgrad.linear(np.ones((2, 3)), np.ones(3)), ValueError, r"weight must be 2-D"),
    "linear-bias": (lambda: matgrad.linear(np.ones((2, 3)), f64, np.ones(3)), ValueError, r"bias"),
    "linear-grad": (lambda: matgrad.linear_backward(np.ones((2, 5)), np.ones((2, 3)), f64), ValueError, r"grad_y"),
    "weight-layout": (lambda: matgrad.linear(np.ones((2, 3)), f64, weight_layout="io"), ValueError,
                      r"weight_layout must be 'in_out' or 'out_in', got 'io'"),
    # dtypes
    "int-gradients": (lambda: matgrad.matmul_backward(np.ones((3, 2), int), np.ones((3, 4), int), np.ones((4, 2), int)),
                      TypeError, r"float32 or float64 operands required, got dtypes int64"),
    "complex-linear": (lambda: matgrad.linear(np.ones((2, 3), complex), f64), TypeError, r"float32 or float64"),
    "precision-name": (lambda: matgrad.matmul(f32, f32.T, precision="fast"), ValueError,
                       r"precision must be 'highest', 'high' or 'medium', got 'fast'"),
    "precision-float64": (lambda: matgrad.matmul(f64, f64.T, precision="medium"), TypeError, r"float64"),
    # out=
    "out-type": (lambda: matgrad.matmul(f64, f64.T, out=[0.0] * 9), TypeError, r"out must be a numpy.ndarray, got list"),
    "out-tuple": (lambda: matgrad.matmul(f64, f64.T, out=(np.zeros((3, 3)),) * 2), ValueError, r"1-tuple, got a 2-tuple"),
    "out-readonly": (lambda: matgrad.matmul(f64, f64.T, out=_readonly((3, 3))), ValueError, r"read-only"),
    "out-cast": (lambda: matgrad.matmul(f64, f64.T, out=np.zeros((3, 3), np.int32)), TypeError,
                 r"Cannot cast ufunc 'matmul' output from dtype\('float64'\) to dtype\('int32'\)"),
    "out-shape": (lambda: matgrad.matmul(f64, f64.T, out=np.zeros((3, 4))), ValueError, r"out has shape \(3, 4\).*\(3, 3\)"),
    # threads and kernels
    "threads-zero": (lambda: matgrad.set_num_threads(0), ValueError, r"at least 1 thread, got 0"),
    "threads-type": (lambda: matgrad.set_num_threads(2.0), TypeError, r"expected an int, got float"),
    "kernel-name": (lambda: matgrad._matgrad.force_kernel("sse9"), ValueError, r"unknown kernel \"sse9\"; known kernels"),
    "fma-peak-dtype": (lambda: matgrad.fma_peak("int8"), TypeError, r"float32 or float64"),
    "thread-pool-name": (lambda: matgrad.set_thread_pool("tbb"), ValueError, r"pool must be 'matgrad' or 'openmp', got 'tbb'"),
    "thread-pool-type": (lambda: matgrad.set_thread_pool(None), TypeError, r"pool must be a str, got NoneType"),
    "thread-pool-missing": (lambda: matgrad.set_thread_pool("openmp", library="/no/such/dir/"), RuntimeError,
                            r"no GNU OpenMP runtime \(libgomp\) from a path containing '/no/such/dir/'"),
    # environment variables
    "env-threads": (_environment("MATGRAD_NUM_THREADS", "many"), ValueError, r"MATGRAD_NUM_THREADS must be an integer, got 'many'"),
    "env-threads-zero": (_environment("MATGRAD_NUM_THREADS", "0"), ValueError, r"at least 1 thread"),
    "env-kernel": (_environment("MATGRAD_KERNEL", "sse9"), ValueError, r"unknown kernel"),
    "env-thread-pool": (_environment("MATGRAD_THREAD_POOL", "tbb", "matgrad.torch"), ValueError,
                        r"MATGRAD_THREAD_POOL must be 'matgrad' or 'openmp', got 'tbb'"),
    # the MLP step
    "mlp-keys": (lambda: nn.mlp2_loss_and_grads({"W1": f64}, f64, np.zeros(3, int)), ValueError, r"params is missing"),
    "mlp-labels-range": (_mlp(y=np.array([0, 3])), ValueError, r"labels y must be < C=3"),
    "mlp-labels-negative": (_mlp(y=np.array([0, -1])), ValueError, r"labels y must be >= 0"),
    "mlp-labels-dtype": (_mlp(y=np.array([0.0, 1.0])), ValueError, r"labels y must be integers"),
    "mlp-empty": (_mlp(X=np.ones((0, 4)), y=np.zeros(0, int)), ValueError, r"X has no rows"),
    "mlp-reg": (_mlp(reg=float("nan")), ValueError, r"reg must be a finite number >= 0"),
    # the GPU
    "gpu-dtype": (_gpu(lambda: gpu.matmul(f64, f64.T)), TypeError, r"the GPU path computes float32 only"),
    "gpu-mixed": (_gpu(lambda: gpu.matmul(gpu.asarray(f32), f32.T)), TypeError, r"all GpuArrays or all host arrays"),
    "gpu-too-big": (_gpu(lambda: _too_big_for_the_device()), ValueError, r"max_buffer_size"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_its_answer(case):
    fn, kind, pattern = CASES[case]
    with pytest.raises(kind) as info:
        fn()
    assert type(info.value) is kind or issubclass(type(info.value), kind)
    assert re.search(pattern, str(info.value)), f"{case}: {info.value}"


def test_the_readme_table_lists_exactly_these_cases():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    ids = set(re.findall(r"^\| `([^`]+)` \|", section, re.M))
    assert ids == set(CASES), (sorted(ids - set(CASES)), sorted(set(CASES) - ids))
