"""Cache size from the windows (model/vlm.py ``context_budget``) and the session's
guarantee that a fixed-size cache never overflows (early window cuts, else one clear
error). The fast backend runs here on the CPU (plain-torch ops) with a small cache."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from app.events import VideoChunk
from model import context as ctx
from model.fast.backend import FastBackend
from model.prompt import Layout
from model.session import ContextOverflowError
from model.vlm import AuraModel, context_budget
from tests.model.conftest import engine_cfg, random_frames
from tests.model.test_equivalence import fresh_logits


def _budget(model, **overrides):
    cfg = replace(model.cfg, **overrides)
    return context_budget(cfg, Layout.for_config(model.tokenizer, model.specials, cfg))


def test_budget_is_sized_by_the_windows(tiny_model):
    """Guards the arena size: at the defaults (30 s + 15 s windows, the benchmark pixel
    budget = at most 294 tokens a chunk, 10 QA groups, 128-token replies) it covers the
    15.3k peak measured on the H100 stream (300-token chunks) with a margin but is far below
    the old fixed bound of 41,812 tokens; it grows with the float window by about 15
    chunks' worth and with the pixel budget."""
    defaults = dict(video_window_s=30.0, float_window_s=15.0, qa_window_groups=10, max_new_tokens=128)
    base = _budget(tiny_model, **defaults)
    assert 15_300 * 1.1 < base < 20_000 and base % 256 == 0
    wider = _budget(tiny_model, **{**defaults, "float_window_s": 30.0})
    assert 15 * 294 < wider - base < 15 * 340 * 1.05 + 256
    assert _budget(tiny_model, **defaults, pixel_budget="demo") > base


@pytest.fixture(scope="module")
def small_cache_model(tiny_dir):
    model = AuraModel.load(engine_cfg(tiny_dir, qa_window_groups=2, max_new_tokens=4, pixel_budget=str(2 * 64 * 64)))
    model.backend = FastBackend(model.hf, max_tokens=_budget(model), pool_size=2)
    return model


def test_many_partial_chunks_cut_early_instead_of_overflowing(small_cache_model):
    """Guards overflow: a question every 0.3 s (each closes a partial chunk) packs ~30
    chunks into the 9-s window, 3x what the budget assumes. The session cuts the window
    early instead of overflowing the cache, and the cache still equals a fresh run."""
    model = small_cache_model
    cap = model.backend.max_tokens
    session = model.new_session("packed")
    rng = np.random.default_rng(2)
    frames_by_key, early = {}, 0
    for i in range(42):
        frames = random_frames(rng, 1)
        frames_by_key[i] = frames
        start_before = session.window_start_s
        chunk = VideoChunk(t_s=0.3 * (i + 1), start_s=0.3 * i, frames=frames, index=i)
        events = list(session.step(chunk, f"Question {i}?"))
        assert events[0].context_tokens + model.cfg.max_new_tokens <= cap
        if start_before is not None:
            rule = ctx.advance_window(start_before, chunk.t_s, 6.0, 3.0)
            early += session.window_start_s > rule
        session.maintain(0.001)
    assert early >= 3
    segments = session.plan_segments(session.window_start_s)
    assert session.context_ids() == [t for seg, _ in segments for t in seg.ids]
    diff = (session.next_token_logits() - fresh_logits(model, segments, frames_by_key)).abs().max()
    assert diff <= 1e-4
    session.close()


def test_a_cache_too_small_for_one_chunk_is_a_clear_error(tiny_dir):
    """Guards the last resort: when not even the system prompt + one chunk + a reply fit,
    the step raises ContextOverflowError with one line naming the cache size, before
    anything is appended."""
    model = AuraModel.load(engine_cfg(tiny_dir, max_new_tokens=4))
    model.backend = FastBackend(model.hf, max_tokens=60, pool_size=2)
    session = model.new_session("tight")
    before = session.context_ids()
    frames = random_frames(np.random.default_rng(0))
    with pytest.raises(ContextOverflowError) as e:
        list(session.step(VideoChunk(t_s=1.0, start_s=0.0, frames=frames, index=0)))
    assert "\n" not in str(e.value) and "cache of 60 tokens" in str(e.value)
    assert session.context_ids() == before
