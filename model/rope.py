"""Explicit 3-row M-RoPE position ids for a segment appended after ``start`` (pure).

Contract: ``segment_positions(seg, start) -> (positions (3, L) int64, next_start)``.
Text tokens take ``p, p+1, ...`` on all three rows (temporal, height, width). A vision
block of merged grid ``h x w`` (one temporal group) starting at counter ``p`` takes
``(p, p + i, p + j)`` for the token in row ``i``, column ``j`` (row-major), and advances
the counter by ``max(h, w)``, not by its ``h * w`` tokens. Appending segments one after
another with ``start = previous next_start`` gives exactly what Qwen3-VL's
``get_rope_index`` computes over the concatenated sequence (each chunk is its own video
item); tests/model/test_rope.py checks that against transformers. No state is read from
the model (``model.model.rope_deltas`` is never used).
"""
from __future__ import annotations

import torch

from model.prompt import Segment


def segment_positions(seg: Segment, start: int) -> tuple[torch.Tensor, int]:
    n = len(seg)
    if seg.vision_at < 0:
        pos = torch.arange(start, start + n, dtype=torch.long).expand(3, n).clone()
        return pos, start + n
    h, w = seg.grid_hw
    a, b = seg.vision_at, seg.vision_at + h * w
    before = torch.arange(start, start + a, dtype=torch.long).expand(3, a)
    p = start + a
    rows = torch.arange(h, dtype=torch.long).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.long).repeat(h)
    block = torch.stack([torch.full((h * w,), p, dtype=torch.long), p + rows, p + cols])
    p += max(h, w)
    after = torch.arange(p, p + (n - b), dtype=torch.long).expand(3, n - b)
    return torch.cat([before, block, after], dim=1), p + (n - b)
