"""Batches made ahead in worker processes are the batches the trainer would make itself;
a prepared batch gives the same forward as the frames it came from."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model.train.prefetch import Prefetch  # noqa: E402


def square(step: int):
    if step == 7:
        raise ValueError("no batch for step 7")
    return {"step": step, "t": torch.full((3,), float(step * step))}


def test_prefetch_gives_draws_batches_in_order_and_restarts_on_a_jump():
    with Prefetch(square, workers=2, ahead=3) as ahead:
        got = [ahead(s) for s in range(5)]
        assert [g["step"] for g in got] == list(range(5))
        assert all(torch.equal(g["t"], square(s)["t"]) for s, g in enumerate(got))
        assert ahead(2)["step"] == 2 and ahead(3)["step"] == 3     # a resume at an earlier step
        with pytest.raises(ValueError, match="step 7"):
            ahead(7)
        assert ahead(8)["step"] == 8


def test_prefetch_refuses_no_workers():
    with pytest.raises(ValueError, match="workers"):
        Prefetch(square, workers=0)


def test_a_prepared_batch_gives_the_same_forward(tmp_path):
    """batch.prepare (the workers' pixel rows, frames dropped) against the frames themselves."""
    from tests.model.train.test_trainer import setup
    from model.train.batch import forward, prepare
    hf, prep, samples = setup(tmp_path)
    ready = prepare(prep, samples)
    assert all(s.chunks == () for s in ready.samples) and ready.grids.shape[0] == sum(len(s.chunks) for s in samples)
    with torch.no_grad():
        a, la, wa = forward(hf, prep, samples)
        b, lb, wb = forward(hf, None, ready)
    assert torch.equal(la, lb) and torch.equal(wa, wb)
    assert torch.equal(a, b)          # the same rows, the same kernels, in the same order
