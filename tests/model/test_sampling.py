"""Token choice, p(<|silent|>), the demo's cross-turn repetition penalty, text deltas."""
from __future__ import annotations

import pytest
import torch

from model.sampling import (MAX_PENALTY, MAX_TOKENS, Sampler, TextStream, apply_bias, is_plain_symbol,
                            p_tokens, repetition_bias)


def test_greedy_is_argmax_and_p_token_is_softmax():
    logits = torch.tensor([0.0, 2.0, 1.0])
    assert Sampler().pick(logits) == 1
    assert p_tokens(logits, (1, 0)) == pytest.approx(tuple(torch.softmax(logits, 0)[[1, 0]].tolist()))


def test_same_seed_same_samples_and_top_p_truncates():
    """Same model + same seed must give identical decisions (regression replays rely on it);
    top-p must never pick outside the nucleus."""
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    s1, s2 = Sampler(1.0, 1.0, seed=7), Sampler(1.0, 1.0, seed=7)
    assert [s1.pick(logits) for _ in range(20)] == [s2.pick(logits) for _ in range(20)]
    top2 = set(torch.topk(logits, 2).indices.tolist())
    nucleus = float(torch.softmax(logits, 0)[list(top2)].sum())
    s = Sampler(1.0, nucleus - 1e-3, seed=3)
    assert {s.pick(logits) for _ in range(50)} <= top2


def test_repetition_bias_follows_the_protocol_formula():
    """Over the last turns (oldest first), a token in >= 2 spoken turns gets
    -sum_i min(count_i, 3) * i / n; a token in one turn only gets nothing."""
    turns = [(5, 5, 5, 5, 9), (), (5, 7), (7, 8)]      # n = 4, the silent turn counts in n
    bias = repetition_bias(turns, exempt=lambda t: False)
    assert bias[5] == pytest.approx(-(3 * 1 / 4 + 1 * 3 / 4))
    assert bias[7] == pytest.approx(-(1 * 3 / 4 + 1 * 4 / 4))
    assert 9 not in bias and 8 not in bias


def test_repetition_bias_exemptions_window_and_caps():
    """Exempt tokens never get a penalty; only the last 10 turns count; the penalty is
    capped at 100 and only the 500 largest are kept."""
    assert repetition_bias([(1, 2), (1, 2)], exempt=lambda t: t == 1) == pytest.approx({2: -1.5})
    old = [(3,), (3,)] + [(4,)] * 10
    assert 3 not in repetition_bias(old, exempt=lambda t: False)
    big = [tuple(range(600)) * 40] * 10
    bias = repetition_bias(big, exempt=lambda t: False)
    assert len(bias) == MAX_TOKENS and min(bias.values()) >= -MAX_PENALTY
    assert is_plain_symbol(" 12,") and not is_plain_symbol(" cup")


def test_apply_bias_and_banned_ids():
    out = apply_bias(torch.zeros(4), {1: -2.0}, torch.tensor([3]))
    assert out.tolist() == [0.0, -2.0, 0.0, float("-inf")]


def test_text_stream_never_splits_a_multibyte_character():
    """Byte-level tokens can end mid-character; deltas must hold that back."""
    pieces = {1: b"caf", 2: b"\xc3", 3: b"\xa9!"}

    def decode(ids):
        return b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")

    stream = TextStream(decode)
    assert [stream.push(1), stream.push(2), stream.push(3)] == ["caf", "", "é!"]
    assert stream.text == "café!"
