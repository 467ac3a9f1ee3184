"""The silent-speech balanced loss (protocol section 5) on hand-made samples."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from model.train.loss import IGNORE, balanced_loss, turn_weights  # noqa: E402

# float32 loss against float64 hand math, values of magnitude ~1: 32 float32 ulps
FP32_REL = 32 * torch.finfo(torch.float32).eps


def test_turn_weights_balanced_supervise_silent_turns_and_the_last_answer_only():
    """m_t = 1 on every silent turn and on the LAST spoken turn only; w = 1/N_silent on silent
    turns (guards: earlier answers supervised, or silence weighted 1 so it drowns the answer)."""
    silent = [True, True, False, True, False]
    assert turn_weights(silent, "balanced") == [1 / 3, 1 / 3, 0.0, 1 / 3, 1.0]
    assert turn_weights([True, True], "balanced") == [0.5, 0.5]
    assert turn_weights([False, False], "balanced") == [0.0, 1.0]


def test_turn_weights_ce_supervises_every_turn_with_weight_one():
    """The ablation: plain CE over every assistant turn."""
    assert turn_weights([True, False, True, False], "ce") == [1.0] * 4
    with pytest.raises(ValueError, match="loss"):
        turn_weights([True], "focal")


def test_context_only_turns_get_no_weight_and_do_not_count():
    """A held-out turn (``context``) is never a target: weight 0 under both losses, not in
    N_silent, and never the last answer (the answer before it is then the target)."""
    silent = [True, False, True, False, True]
    context = [False, False, True, True, False]
    assert turn_weights(silent, "balanced", context) == [0.5, 1.0, 0.0, 0.0, 0.5]
    assert turn_weights(silent, "ce", context) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert turn_weights(silent, "balanced", [False] * 5) == turn_weights(silent, "balanced")


def test_balanced_loss_is_the_weighted_sum_over_the_count_of_supervised_tokens():
    """L = -(1/sum m) sum m w log p, computed by hand from explicit softmaxes (guards a
    normalisation by sum m*w, or a missing weight)."""
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, 1, IGNORE, 2]])
    weights = torch.tensor([[0.5, 0.5, 0.0, 1.0]])

    def logp(row, k):
        return row[k] - math.log(sum(math.exp(v) for v in row))
    rows = logits[0].tolist()
    want = -(0.5 * logp(rows[0], 0) + 0.5 * logp(rows[1], 1) + 1.0 * logp(rows[3], 2)) / 3
    assert float(balanced_loss(logits, labels, weights)) == pytest.approx(want, rel=FP32_REL)


def test_balanced_loss_normalises_each_sample_then_averages():
    """Two samples with different counts: the batch loss is the mean of per-sample losses
    (uniform logits: -log p = log V on every supervised token)."""
    V = 4
    logits = torch.zeros(2, 3, V)
    labels = torch.tensor([[1, IGNORE, IGNORE], [1, 2, 3]])
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.25, 1.0]])
    per = [math.log(V) * 1.0 / 1, math.log(V) * 1.5 / 3]
    assert float(balanced_loss(logits, labels, weights)) == pytest.approx(sum(per) / 2, rel=FP32_REL)


def test_balanced_loss_gradient_reaches_only_supervised_positions():
    """Unsupervised (IGNORE) positions give no gradient, whatever their logits."""
    logits = torch.randn(1, 3, 5, requires_grad=True)
    balanced_loss(logits, torch.tensor([[IGNORE, 2, IGNORE]]), torch.tensor([[9.0, 1.0, 9.0]])).backward()
    assert logits.grad[0, 0].abs().max() == 0 and logits.grad[0, 2].abs().max() == 0
    assert logits.grad[0, 1].abs().max() > 0
