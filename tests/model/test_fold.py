"""Folded turn ends (model/session.py, model/track.py): the end of each assistant turn goes
into the next chunk's forward instead of a forward of its own, and nothing that reads the
context can tell the difference.

Two sessions on the tiny model are driven through the same stream (silent steps,
questions, spoken, cancelled and closed-early replies, a partial chunk, window cuts with
the shadow maintained in slices): one folds, one appends each turn end at once. Nothing
reads the folded session's logits until the end, so the folding really happens.
"""
from __future__ import annotations

import copy

import numpy as np

from model.session import AuraSession
from tests.model.conftest import chunk_at, fp_tol, random_frames
from tests.model.test_equivalence import CANCEL, CLOSE_EARLY, PARTIAL, QUESTIONS, SEED, STEPS, fresh_logits


class CountingBackend:
    """The model's own backend, counting forwards (``append`` calls)."""

    def __init__(self, inner):
        self.inner = inner
        self.forwards = 0

    def append(self, *args, **kwargs):
        self.forwards += 1
        return self.inner.append(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _drive(session, i, frames, seen_ids):
    chunk = chunk_at(i, frames, t_s=i + (0.4 if i == PARTIAL else 1.0))
    gen = session.step(chunk, QUESTIONS.get(i), (lambda: True) if i in CANCEL else None)
    out = []
    for ev in gen:
        if ev.type == "step":
            seen_ids.append(session.context_ids())          # what replay --dump-context records
            out.append((ev.decision, round(ev.p_silent, 5), ev.context_tokens))
        else:
            out.append((ev.type, getattr(ev, "text", None), getattr(ev, "cancelled", None)))
        if i == CLOSE_EARLY and ev.type == "reply_start":
            gen.close()
    return out


def _kv(session):
    layers = session._live.cache.layers
    return [(ly.keys, ly.values) for ly in layers]


def test_folded_turn_ends_leave_the_same_cache_with_fewer_forwards(tiny_model):
    """Guards the fold: deferred ids keep their positions, go in front of the next chunk in
    one forward, are dropped with the old cache at a cut (the shadow has them in full), and
    are flushed before logits are read. Events, context ids at every decision, the final
    KV cache and next-token logits equal the unfolded session's and a fresh forward's."""
    models = []
    for _ in range(2):
        m = copy.copy(tiny_model)
        m.backend = CountingBackend(tiny_model.backend)
        models.append(m)
    folded = AuraSession(models[0], "fold", fold_turn_end=True)
    strict = AuraSession(models[1], "strict", fold_turn_end=False)
    rng = np.random.default_rng(SEED)
    frames_by_key, ids_f, ids_s, cuts, start = {}, [], [], 0, None
    for i in range(STEPS):
        frames = random_frames(rng, 1 if i == PARTIAL else 2)
        frames_by_key[i] = frames
        assert _drive(folded, i, frames, ids_f) == _drive(strict, i, frames, ids_s), f"step {i}"
        assert folded._live.pending_ids and not strict._live.pending_ids
        assert folded.context_ids() == strict.context_ids() and folded.context_tokens == strict.context_tokens
        cuts += start is not None and folded.window_start_s != start
        start = folded.window_start_s
        if i % 2:        # shadow work done in full (slices) or left for the cut: the same
            folded.maintain(60.0)        # in both sessions (a small time budget made the
            strict.maintain(60.0)        # forward counts depend on the machine's load)
    assert cuts >= 2 and ids_f == ids_s
    saved = models[1].backend.forwards - models[0].backend.forwards
    assert saved == STEPS                    # one forward fewer per finished round

    logits_f, logits_s = folded.next_token_logits(), strict.next_token_logits()
    assert not folded._live.pending_ids and folded._live.ids == strict._live.ids
    for (kf, vf), (ks, vs) in zip(_kv(folded), _kv(strict)):
        assert kf.shape == ks.shape and (kf - ks).abs().max() <= fp_tol(ks) and (vf - vs).abs().max() <= fp_tol(vs)
    fresh = fresh_logits(tiny_model, folded.plan_segments(folded.window_start_s), frames_by_key)
    assert (logits_f - logits_s).abs().max() <= fp_tol(logits_s) and (logits_f - fresh).abs().max() <= 1e-4


def test_reset_and_close_with_a_deferred_turn_end(tiny_model):
    """Guards reset/close while a turn end is still deferred: the context is the system
    prompt again (nothing leaks into the new conversation), and the session works on."""
    session = tiny_model.new_session("rc")
    rng = np.random.default_rng(0)
    system = session.context_ids()
    list(session.step(chunk_at(0, random_frames(rng))))
    assert session._live.pending_ids
    session.reset()
    assert session.context_ids() == system and not session._live.pending_ids
    list(session.step(chunk_at(1, random_frames(rng))))
    assert session.context_ids()[:len(system)] == system
    session.close()
    assert session.context_ids() == [] and session.context_tokens == 0
