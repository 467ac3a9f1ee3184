"""The tolerance rule of the numeric tests (tests/model/conftest.py ``fp_tol``)."""
from __future__ import annotations

import torch

from tests.model.conftest import fp_tol


def test_tolerance_scales_with_magnitude_and_dtype():
    """Guards against a fixed fp32 bound on large values: CI failed on a clean clone when two
    logits vectors of magnitude ~30 differed by 1.14e-5 against a 1e-5 bound (the summation
    order of another CPU). The bound grows with the values' magnitude and the dtype's eps."""
    logits = torch.full((8,), 30.0)
    assert fp_tol(logits) >= 1.14e-5 * 4                # the CI failure, with room
    assert fp_tol(logits) <= 1e-3                       # still catches a real difference
    assert fp_tol(logits * 10) == 10 * fp_tol(logits)
    assert fp_tol(logits.bfloat16()) > 1000 * fp_tol(logits)
    assert fp_tol(torch.full((4,), 1e-3)) == fp_tol(torch.ones(4))   # floor at magnitude 1
