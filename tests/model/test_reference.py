"""ReferenceBackend: the LMBackend protocol on plain transformers."""
from __future__ import annotations

import torch

from model.prompt import Segment
from model.rope import segment_positions


def _inputs(model, n: int):
    ids = tuple(range(10, 10 + n))
    pos, _ = segment_positions(Segment(ids), 0)
    return model.embed(ids), pos


def test_appending_in_pieces_equals_appending_at_once(tiny_model):
    """The session appends a segment in slices (shadow work); the cache must not care."""
    backend = tiny_model.backend
    embeds, pos = _inputs(tiny_model, 12)
    whole, pieces = backend.new_cache(), backend.new_cache()
    a = backend.append(whole, embeds, pos)
    for lo, hi in ((0, 5), (5, 6), (6, 12)):
        b = backend.append(pieces, embeds[lo:hi], pos[:, lo:hi])
    assert backend.length(whole) == backend.length(pieces) == 12
    assert a.shape == (len(tiny_model.tokenizer),) and a.dtype == torch.float32
    assert torch.allclose(a, b, atol=1e-5)


def test_truncate_then_append_again(tiny_model):
    backend = tiny_model.backend
    embeds, pos = _inputs(tiny_model, 8)
    cache = backend.new_cache()
    first = backend.append(cache, embeds, pos)
    backend.truncate(cache, 5)
    assert backend.length(cache) == 5
    again = backend.append(cache, embeds[5:], pos[:, 5:])
    assert torch.allclose(first, again, atol=1e-5)
    backend.release(cache)
