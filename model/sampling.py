"""Choosing tokens: greedy / temperature / top-p, the silent probability, and the demo's
cross-turn repetition penalty (protocol section 4).

Contract (no model access, tensors in, numbers out):
* ``Sampler(temperature, top_p, seed, device)`` — ``pick(logits) -> int``: argmax when
  temperature is 0, else nucleus sampling from ``softmax(logits / T)`` with the sampler's
  own seeded ``torch.Generator`` (same seed + same logits -> same choices).
* ``p_tokens(logits, ids)`` — softmax probabilities of those ids (temperature 1).
* ``repetition_bias(turns, exempt)`` — ``{token: -penalty}`` over the last ``MAX_TURNS``
  assistant turns (oldest first; a silent turn is an empty tuple): with ``n`` the number of
  SPOKEN turns among them and ``i`` = 1..n a spoken turn's rank (oldest first), a token
  that appears in at least 2 spoken turns gets ``-sum_i min(count_i, 3) * i / n`` (recent
  turns weigh more; silent turns count in neither, as in the release), capped at ``MAX_PENALTY``, only the
  ``MAX_TOKENS`` largest penalties kept; ``exempt(id)`` tokens (specials, punctuation,
  digits) never get one. The bias pushes repeated wording down, i.e. toward silence.
* ``TextStream(decode)`` — incremental detokenization: ``push(id) -> new text`` (holds
  back an incomplete UTF-8 character until it completes).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Callable, Sequence

import torch

MAX_TURNS = 10
MAX_COUNT = 3
MAX_PENALTY = 100.0
MAX_TOKENS = 500


class Sampler:
    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(seed))

    def pick(self, logits: torch.Tensor) -> int:
        if self.temperature <= 0.0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_p, dim=-1) - sorted_p
            sorted_p = torch.where(before < self.top_p, sorted_p, torch.zeros_like(sorted_p))
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
        return int(torch.multinomial(probs, 1, generator=self.gen))


def p_tokens(logits: torch.Tensor, tokens: Sequence[int]) -> tuple[float, ...]:
    """Softmax probabilities of several ids (temperature 1), one softmax."""
    probs = torch.softmax(logits.float(), dim=-1)
    return tuple(float(probs[t]) for t in tokens)


def repetition_bias(turns: Sequence[tuple[int, ...]], exempt: Callable[[int], bool]) -> dict[int, float]:
    # the lookback is the last MAX_TURNS assistant turns; n and i count only the spoken
    # ones among them (a silent turn is empty): i = 1 for the oldest spoken, n the newest
    recent = [turn for turn in list(turns)[-MAX_TURNS:] if turn]
    n = len(recent)
    spoken_in: Counter[int] = Counter()
    penalty: dict[int, float] = {}
    for i, turn in enumerate(recent, start=1):
        counts = Counter(turn)
        for tok, c in counts.items():
            spoken_in[tok] += 1
            penalty[tok] = penalty.get(tok, 0.0) + min(c, MAX_COUNT) * i / n
    chosen = [(min(p, MAX_PENALTY), tok) for tok, p in penalty.items()
              if spoken_in[tok] >= 2 and not exempt(tok)]
    chosen.sort(key=lambda pt: (-pt[0], pt[1]))
    return {tok: -p for p, tok in chosen[:MAX_TOKENS]}


def apply_bias(logits: torch.Tensor, bias: dict[int, float], banned: torch.Tensor | None) -> torch.Tensor:
    """``logits`` plus the bias, with ``banned`` ids (a long tensor) set to -inf."""
    out = logits.float().clone()
    if bias:
        ids = torch.tensor(list(bias), dtype=torch.long, device=out.device)
        out[ids] += torch.tensor(list(bias.values()), dtype=out.dtype, device=out.device)
    if banned is not None and banned.numel():
        out[banned] = float("-inf")
    return out


def is_plain_symbol(text: str) -> bool:
    """True for text made only of punctuation, digits, symbols and spaces (or nothing)."""
    return all(unicodedata.category(ch)[0] in "PNSZ" or ch.isspace() for ch in text)


class TextStream:
    """Turns token ids into text deltas, never splitting a multi-byte character."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self.text = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        full = self._decode(self.ids)
        if full.endswith("\ufffd"):
            return ""
        delta, self.text = full[len(self.text):], full
        return delta
