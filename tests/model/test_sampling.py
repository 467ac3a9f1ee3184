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


def test_repetition_bias_weighs_spoken_turns_only():
    """Guards issue 12 item 3: in the release n is the number of SPOKEN turns in the
    10-turn lookback and i a turn's recency rank among them; counting silent turns in both
    made the bias far weaker. Worked by hand:

    lookback (last 10 of 12, oldest first): (5,6,6) . (5,7) . (6,6,6,6,5) . . . . .
    spoken turns: i=1 (5,6,6), i=2 (5,7), i=3 (6,6,6,6,5); n = 3
    token 5: in 3 spoken turns, counts 1,1,1 -> 1*1/3 + 1*2/3 + 1*3/3 = 2
    token 6: in 2 spoken turns, counts 2 and min(4, 3) = 3 -> 2*1/3 + 3*3/3 = 11/3
    token 7: one spoken turn only -> nothing
    token 8: twice, but both turns are older than the lookback -> nothing
    (counting silent turns gave n = 10, i = 1, 3, 5: token 5 -> 0.9, token 6 -> 1.7)"""
    turns = [(8,), (8,), (5, 6, 6), (), (5, 7), (), (6, 6, 6, 6, 5), (), (), (), (), ()]
    bias = repetition_bias(turns, exempt=lambda t: False)
    assert bias == pytest.approx({5: -2.0, 6: -11 / 3})


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
