"""The AURA stream harness: window cuts, shadow rebuild, folded turn ends (CPU, tiny model).

After any number of steps the live cache must hold exactly what a fresh render of the
protocol's context holds (system, last QA groups as text, the window's chunks with their
assistant turns), with the same positions: checked by appending the same next chunk to
the live cache and to a cache built from scratch and comparing logits.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.fast.backend import FastBackend  # noqa: E402
from model.bench.stream import SYSTEM, StreamHarness, text_qa, user_chunk  # noqa: E402
from model.fast.tiny import build_qwen3vl, tiny_config  # noqa: E402
from model.fast.vision import FastVision  # noqa: E402
from tests.model.conftest import fp_tol  # noqa: E402

GRID = (1, 4, 6)


@pytest.fixture(scope="module")
def parts():
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=5)
    return model, FastVision(model, [GRID])


def _pixels(i):
    return torch.randn(24, 3 * 2 * 16 * 16, generator=torch.Generator().manual_seed(i))


@pytest.mark.parametrize("fold", [False, True])
def test_live_cache_equals_fresh_render_across_cuts(parts, fold):
    """Guards the window bookkeeping: cut timing (N + N'), QA groups kept as text, re-based
    positions in the shadow, replies' last token and turn ends (strict and folded)."""
    model, fv = parts
    backend = FastBackend(model, max_tokens=2048, pool_size=4)
    emb = model.model.language_model.embed_tokens.weight.detach()
    h = StreamHarness(backend, fv.encode, emb, grid=GRID, window_chunks=3, float_chunks=2,
                      qa_groups=2, fold_turn_end=fold)
    for k in range(14):
        q = [3000 + k, 3001] if k % 4 == 1 else None
        out = h.step(_pixels(k), q, reply_tokens=3)
        assert len(h.window) <= 5
        h.idle(1e9)
    assert h.cuts == 5                         # window of 3 + 2 chunks: cuts at steps 5, 7, 9, 11, 13
    assert h.qa and len(h.qa) <= 2
    fresh = StreamHarness(backend, fv.encode, emb, grid=GRID)   # only for its _append helper
    fresh.backend.truncate(fresh.live.handle, 0)
    fresh.live.next_pos = 0
    ids = list(SYSTEM)
    for q, a in h.qa:
        ids += text_qa(q, a)
    fresh._append(fresh.live, ids)
    for c in h.window:
        fresh._append(fresh.live, c.user + c.assistant, c.vision)
    vision = fv.encode(_pixels(99), GRID)
    nxt = user_chunk(6)
    a = h._append(h.live, h.pending + nxt, vision)
    b = fresh._append(fresh.live, nxt, vision)
    assert backend.length(h.live.handle) == backend.length(fresh.live.handle)
    assert h.live.next_pos == fresh.live.next_pos
    assert (a - b).abs().max().item() <= fp_tol(b)
    assert out["context"] > 0 and "decision_ms" in out
