"""Explicit M-RoPE positions (architecture rule 3) against transformers' own computation."""
from __future__ import annotations

import torch

from model.prompt import Segment
from model.rope import segment_positions

PAD = 99


def _chunk(h: int, w: int, before: int = 3, after: int = 5) -> Segment:
    return Segment((1,) * before + (PAD,) * (h * w) + (2,) * after, vision_at=before, grid_hw=(h, w))


def test_vision_block_advances_by_the_longer_side():
    """A 2x3 block at counter 10: t-row constant, h/w rows count rows/columns; the counter
    then moves by max(h, w) = 3, not by the 6 tokens."""
    pos, nxt = segment_positions(_chunk(2, 3, before=1, after=2), 9)
    assert pos.tolist() == [[9, 10, 10, 10, 10, 10, 10, 13, 14],
                            [9, 10, 10, 10, 11, 11, 11, 13, 14],
                            [9, 10, 11, 12, 10, 11, 12, 13, 14]]
    assert nxt == 15


def test_appended_segments_match_get_rope_index_over_the_whole_sequence(tiny_model):
    """Positions of segments appended one by one (each continuing from the last) must equal
    what Qwen3-VL computes for the concatenated sequence; otherwise logits after a cached
    append are wrong (environment.md, transformers traps)."""
    pad = tiny_model.specials.video_pad
    segs = [Segment(tuple(range(5))),
            Segment((1, 2, 3) + (pad,) * 4 + (4, 5), vision_at=3, grid_hw=(2, 2)),
            Segment((6, 7, 8)),
            Segment((1,) + (pad,) * 6 + (4,) * 7, vision_at=1, grid_hw=(3, 2)),
            Segment((1, 1) + (pad,) * 8 + (4,), vision_at=2, grid_hw=(2, 4))]
    start, ours = 0, []
    for seg in segs:
        pos, start = segment_positions(seg, start)
        ours.append(pos)
    ids = torch.tensor([[i for s in segs for i in s.ids]])
    grids = torch.tensor([[1, 2 * h, 2 * w] for s in segs if s.vision_at >= 0 for h, w in [s.grid_hw]])
    theirs, _ = tiny_model.hf.model.get_rope_index(ids, (ids == pad).int() * 2, video_grid_thw=grids)
    assert torch.equal(torch.cat(ours, dim=1), theirs[:, 0])
