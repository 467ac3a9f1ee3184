"""AuraSession behaviour: event contract, append-only cache, turn structure, isolation."""
from __future__ import annotations

import numpy as np
import pytest

from app.clock import ManualClock
from model.vlm import AuraModel
from tests.model.conftest import chunk_at, engine_cfg, random_frames


def _until_speaking(session, rng, start=0, limit=12, question=None, cancel=None):
    """Steps silent chunks until one speaks; returns (index, events) of that step."""
    for i in range(start, start + limit):
        gen = session.step(chunk_at(i, random_frames(rng)), question, cancel)
        first = next(gen)
        if first.decision == "speak":
            return i, gen, first
        assert list(gen) == []
    pytest.fail("the tiny model never spoke; see model/tiny.py calibration")


def _roles(model, ids: list[int]) -> list[str]:
    """The role names after each <|im_start|> (up to the newline), in order."""
    nl = model.tokenizer.encode("\n")[0]
    starts = [k for k, t in enumerate(ids) if t == model.specials.im_start]
    return [model.tokenizer.decode(ids[k + 1:ids.index(nl, k)]) for k in starts]


def test_speaking_step_event_contract(tiny_model):
    """StepDecision first (t_s = chunk end), then ReplyStarted, deltas, ReplyEnded whose
    text is the deltas joined; reply ids are per session; proactive = no question."""
    session = tiny_model.new_session("s1")
    i, gen, first = _until_speaking(session, np.random.default_rng(4))
    rest = list(gen)
    assert first.type == "step" and first.t_s == i + 1.0 and first.chunk_index == i
    assert 0.0 <= first.p_silent <= 1.0 and first.context_tokens < session.context_tokens
    assert [e.type for e in rest][0] == "reply_start" and rest[-1].type == "reply"
    assert rest[0].reply_id == "s1-r1" and rest[0].proactive is True
    assert "".join(e.text for e in rest if e.type == "reply_delta") == rest[-1].text
    assert rest[-1].ttft_ms > 0 and not rest[-1].cancelled and rest[-1].n_tokens >= 1


def test_history_is_only_appended_between_cuts(tiny_model):
    """A normal step must extend the cache, never re-render it (issue 2, persistent cache)."""
    session = tiny_model.new_session("a")
    rng = np.random.default_rng(0)
    for i in range(8):                        # 6 s + 3 s window: no cut before t = 10
        before = session.context_ids()
        list(session.step(chunk_at(i, random_frames(rng)), "What is here?" if i == 3 else None))
        after = session.context_ids()
        assert after[:len(before)] == before and len(after) > len(before)


def test_turns_always_alternate_even_when_replies_are_abandoned(tiny_model):
    """The release left two user turns in a row after a cancel; here the assistant turn is
    appended whether the reply finished, was cancelled, the generator was closed, or the
    next step started while the previous one was still open."""
    session = tiny_model.new_session("t")
    rng = np.random.default_rng(4)
    i, gen, _ = _until_speaking(session, rng)
    gen.close()                                               # closed right after the decision
    i, gen, _ = _until_speaking(session, rng, start=i + 1)
    next(gen)                                                 # ReplyStarted, then abandoned
    list(session.step(chunk_at(i + 1, random_frames(rng)), "And now?"))
    i, gen, _ = _until_speaking(session, rng, start=i + 2, cancel=lambda: True)
    ended = [e for e in gen if e.type == "reply"]
    assert ended and ended[0].cancelled
    roles = _roles(tiny_model, session.context_ids())
    assert roles[0] == "system" and len(roles) % 2 == 1
    assert roles[1::2] == ["user"] * (len(roles) // 2) and roles[2::2] == ["assistant"] * (len(roles) // 2)
    assert session.context_ids()[-2] == tiny_model.specials.im_end


def _events(session, i, rng):
    return [(e.type, getattr(e, "text", None)) for e in session.step(chunk_at(i, random_frames(rng)))]


def test_sessions_sharing_a_model_do_not_share_state(tiny_model):
    """Interleaving two sessions on one model gives each the results it gets alone."""
    a, b = tiny_model.new_session("a"), tiny_model.new_session("b")
    ra, rb = np.random.default_rng(1), np.random.default_rng(2)
    both = [(_events(a, i, ra), _events(b, i, rb)) for i in range(6)]
    alone_a, rng = tiny_model.new_session("a"), np.random.default_rng(1)
    assert [x for x, _ in both] == [_events(alone_a, i, rng) for i in range(6)]
    alone_b, rng = tiny_model.new_session("b"), np.random.default_rng(2)
    assert [y for _, y in both] == [_events(alone_b, i, rng) for i in range(6)]
    assert a.context_ids() == alone_a.context_ids() and b.context_ids() == alone_b.context_ids()


def test_reset_empties_the_context_and_close_frees_it(tiny_model):
    session = tiny_model.new_session("r")
    system_only = session.context_tokens
    rng = np.random.default_rng(0)
    for i in range(3):
        list(session.step(chunk_at(i, random_frames(rng))))
    session.reset()
    assert session.context_tokens == system_only and session.window_start_s is None
    list(session.step(chunk_at(50, random_frames(rng))))
    assert session.window_start_s == 50.0
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.step(chunk_at(51, random_frames(rng)))


def test_same_seed_same_sampled_decisions(tiny_dir):
    """With temperature > 0, same model + same seed must give identical decisions."""
    model = AuraModel.load(engine_cfg(tiny_dir, temperature=1.0, top_p=0.9, seed=3))

    def decisions():
        s, rng = model.new_session("x"), np.random.default_rng(5)
        return [[(e.type, getattr(e, "text", None)) for e in s.step(chunk_at(i, random_frames(rng)))]
                for i in range(5)]
    assert decisions() == decisions()


def test_reply_events_use_the_session_clock(tiny_model):
    """With a clock, reply events carry clock time (the orchestrator's stream clock)."""
    clock = ManualClock(123.0)
    session = tiny_model.new_session("c", clock=clock)
    _, gen, first = _until_speaking(session, np.random.default_rng(4))
    start = next(gen)
    assert start.t_s == 123.0 and first.t_s != 123.0


def test_repetition_penalty_changes_the_decision_logits(tiny_dir):
    """The demo's cross-turn penalty is wired in: once spoken turns repeat tokens, the
    decision probabilities differ from the same run without it."""
    def p_silents(flag: bool):
        model = AuraModel.load(engine_cfg(tiny_dir, repetition_penalty=flag))
        s, rng = model.new_session("p"), np.random.default_rng(4)
        return [list(s.step(chunk_at(i, random_frames(rng))))[0].p_silent for i in range(10)]
    plain, penalized = p_silents(False), p_silents(True)
    assert plain[:2] == penalized[:2] and plain != penalized


def test_allow_speak_false_records_silence(tiny_model):
    """Proactive remarks off: a step the model would speak on stays silent, and the context
    holds a silent turn, matching what the user experienced."""
    rng = np.random.default_rng(4)
    speaker = tiny_model.new_session("on")
    i, gen, first = _until_speaking(speaker, rng)
    gen.close()
    muted, rng = tiny_model.new_session("off"), np.random.default_rng(4)
    for k in range(i):
        list(muted.step(chunk_at(k, random_frames(rng))))
    events = list(muted.step(chunk_at(i, random_frames(rng)), allow_speak=False))
    assert [e.type for e in events] == ["step"] and events[0].decision == "silent"
    assert events[0].p_silent == first.p_silent
    assert muted.context_ids()[-3:] == [tiny_model.specials.silent, tiny_model.specials.im_end,
                                        *tiny_model.tokenizer.encode("\n")]


def test_each_reply_token_is_queued_before_its_text_goes_out(tiny_model):
    """Guards the decode order: a token's forward is queued before its ReplyDelta is
    yielded (the consumer's time overlaps the device's work), and the last token allowed
    by max_new_tokens is never fed (its turn end is deferred with it)."""
    import copy

    from tests.model.test_fold import CountingBackend
    model = copy.copy(tiny_model)
    model.backend = CountingBackend(tiny_model.backend)
    session = model.new_session("order")
    rng = np.random.default_rng(4)
    for i in range(12):
        gen = session.step(chunk_at(i, random_frames(rng)))
        at_decision = None
        seen = []
        for ev in gen:
            if ev.type == "step":
                at_decision = model.backend.forwards
            elif ev.type == "reply_delta":
                seen.append(model.backend.forwards - at_decision)
            elif ev.type == "reply":
                n = ev.n_tokens
        if seen:
            break
    assert seen and seen[0] == 1 and seen == sorted(seen)
    fed = n - 1 if n == model.cfg.max_new_tokens else n      # else it stopped on a stop token
    assert model.backend.forwards - at_decision == fed
    assert len(session._live.pending_ids) == n - fed + 2      # (last token) <|im_end|> \n


class CountingVision:
    """The model's real vision encoder, counting how often it runs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def encode(self, frames):
        self.calls += 1
        return self.inner.encode(frames)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_cuts_keep_the_system_prompt_and_never_re_encode_video(tiny_dir):
    """Across four window cuts (6 s + 3 s window) with questions before and after them:
    the system prompt stays first and appears once, and each chunk's frames go through the
    vision tower exactly once (rebuilds reuse the kept features)."""
    model = AuraModel.load(engine_cfg(tiny_dir))
    model.vision = CountingVision(model.vision)
    session = model.new_session("v")
    system = list(model.new_session("ref").layout.system().ids)
    rng = np.random.default_rng(2)
    starts = set()
    for i in range(22):
        list(session.step(chunk_at(i, random_frames(rng)), "What is here?" if i in (2, 11) else None))
        while session.maintain(0.05):
            pass
        ids = session.context_ids()
        assert ids[:len(system)] == system and _roles(model, ids).count("system") == 1
        starts.add(session.window_start_s)
    assert model.vision.calls == 22
    assert len(starts) >= 5                  # the window moved at least four times
