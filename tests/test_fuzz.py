"""Differential fuzzing, the bounded run: hypothesis draws cases (tests/fuzzing.py) for each
function and compares matgrad with NumPy (matmul), torch's autograd (matmul_backward) and the
NumPy formulas (the linear layer, the MLP step) — results bit for bit, errors by kind, and the
memory around every array. MATGRAD_FUZZ_EXAMPLES sets the examples per function (default
300); tests/fuzz_campaign.py is the long campaign."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fuzzing

EXAMPLES = int(os.environ.get("MATGRAD_FUZZ_EXAMPLES", "300"))


@pytest.mark.parametrize("target", sorted(fuzzing.TARGETS))
def test_agrees_with_the_reference(target):
    if target == "matmul_backward":
        pytest.importorskip("torch", reason="torch's autograd is matmul_backward's reference")
    draw, check = fuzzing.TARGETS[target]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def run(data):
        check(draw(fuzzing.HypothesisDraws(data)))

    run()
