"""The silent-speech balanced loss (protocol section 5) and its plain-CE ablation.

Contract:
* ``turn_weights(silent, loss, context=None)``: per assistant turn of a sample (``silent[i]``
  True for a ``<|silent|>`` turn, in order), the weight of its tokens. "balanced": m = 1 on
  every silent turn and on the LAST non-silent turn, w = 1/N_silent on silent turns, 1 on
  that answer, 0 (m = 0) on earlier answers. "ce": every turn, w = 1. A turn with
  ``context[i]`` True is context only: w = 0, and it counts neither in N_silent nor as the
  last answer.
* ``balanced_loss(logits, labels, weights)``: ``logits (B, L, V)``, ``labels (B, L)`` the
  next token where m_t = 1 and ``IGNORE`` elsewhere, ``weights (B, L)`` w_t. Per sample
  L = -(1 / sum_t m_t) * sum_t m_t w_t log p(y_t); the batch loss is the mean over
  samples. Log-probabilities are taken in float32.
"""
from __future__ import annotations

import torch

IGNORE = -100


def turn_weights(silent: list[bool], loss: str = "balanced", context: list[bool] | None = None) -> list[float]:
    seen = context or [False] * len(silent)
    if loss == "ce":
        return [0.0 if c else 1.0 for c in seen]
    if loss != "balanced":
        raise ValueError(f"loss must be 'balanced' or 'ce', got {loss!r}")
    n_silent = sum(s and not c for s, c in zip(silent, seen))
    spoken = [i for i, (s, c) in enumerate(zip(silent, seen)) if not s and not c]
    last = spoken[-1] if spoken else -1
    return [0.0 if c else (1.0 / n_silent if s else (1.0 if i == last else 0.0))
            for i, (s, c) in enumerate(zip(silent, seen))]


def balanced_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    m = labels != IGNORE
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    per_token = torch.where(m, -picked * weights.to(logp.dtype), torch.zeros_like(picked))
    count = m.sum(-1).clamp_min(1).to(logp.dtype)
    return (per_token.sum(-1) / count).mean()
