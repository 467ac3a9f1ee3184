"""``Track``: one KV cache and what it takes to keep appending segments to it.

Contract: a track owns a backend cache handle, the next M-RoPE position counter, the ids
it holds (``ids``, for dumps and tests), the logits after them (``last_logits``), the
deferred text ids (``pending_ids``) and a queue of segments not yet appended.
``append(seg, feats)`` prepares a segment (embeddings with the vision features scattered
in at the video pads, explicit positions, visual mask, deepstack rows) and appends it now,
returning the last position's logits; ``append_ids(ids)`` does the same for plain text.
Positions and visual masks stay on the CPU (the backend moves them: the fast one stages
them through pinned memory, so nothing here waits for the device).
``defer_ids(ids)`` takes text ids (an assistant turn's end) whose logits nobody needs: their
positions are assigned now, but they go into the cache in front of the NEXT append, in the
same forward (one pass over the weights instead of two; the cache ends up identical).
``flush()`` appends deferred ids too; ``n_tokens`` counts only what is in the cache.
``queue(seg, feats)`` defers a segment; ``work(deadline)`` appends queued tokens in slices
of at most ``slice_tokens`` until the ``time.perf_counter()`` deadline and says whether
work remains; ``flush()`` appends everything queued. Appending a segment in slices gives
the same cache as appending it whole (positions and deepstack rows are sliced with it).
``release()`` frees the cache; the track must not be used afterwards.
``greedy(bias, limit)`` (backends with ``greedy``, model/fast/greedy.py) starts a device-side
greedy reply at ``next_pos``: ``feed(token)`` records each fed token (ids, positions) as
``append_ids`` would, ``next()`` gives the next greedy token, ``close()`` must come before
anything else touches the track; ``last_logits`` is None after it (a reply's logits stay
on the device; the turn end appended or deferred next supersedes them anyway).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from model.prompt import Segment
from model.rope import segment_positions
from model.vision import VisionFeatures


@dataclass(eq=False)
class _Prepared:
    ids: tuple[int, ...]
    embeds: torch.Tensor
    positions: torch.Tensor
    vision: tuple[int, int]                      # [start, end) of the visual rows
    deepstack: tuple[torch.Tensor, ...]
    done: int = 0


class Track:
    def __init__(self, backend, embed: Callable[[tuple[int, ...]], torch.Tensor],
                 slice_tokens: int = 128):
        self.backend = backend
        self._embed = embed
        self.slice_tokens = int(slice_tokens)
        self.cache = backend.new_cache()
        self.next_pos = 0                 # M-RoPE counter after everything queued so far
        self.ids: list[int] = []          # ids appended (in the cache), in order
        self.last_logits: torch.Tensor | None = None   # next-token logits after ``ids``
        self._queue: deque[_Prepared] = deque()
        self._deferred: list[_Prepared] = []

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def pending_ids(self) -> tuple[int, ...]:
        """Deferred ids: part of the context, not yet in the cache."""
        return tuple(i for p in self._deferred for i in p.ids)

    @property
    def pending_tokens(self) -> int:
        return sum(len(p.ids) - p.done for p in self._queue)

    def _prepare(self, seg: Segment, feats: VisionFeatures | None) -> _Prepared:
        embeds = self._embed(seg.ids)
        positions, self.next_pos = segment_positions(seg, self.next_pos)
        vision, deep = (0, 0), ()
        if seg.vision_at >= 0:
            if feats is None or feats.grid_hw != seg.grid_hw:
                raise ValueError("a video segment needs the vision features of its own chunk")
            vision = (seg.vision_at, seg.vision_at + seg.n_visual)
            embeds = embeds.clone()
            embeds[vision[0]:vision[1]] = feats.embeds.to(embeds.device, embeds.dtype)
            deep = tuple(d.to(embeds.device, embeds.dtype) for d in feats.deepstack)
        return _Prepared(seg.ids, embeds, positions, vision, deep)

    def _step(self, p: _Prepared, n: int) -> torch.Tensor:
        a, b = p.done, min(len(p.ids), p.done + n)
        va, vb = max(a, p.vision[0]), min(b, p.vision[1])
        mask = deep = None
        if vb > va:
            mask = torch.zeros(b - a, dtype=torch.bool)
            mask[va - a:vb - a] = True
            deep = [d[va - p.vision[0]:vb - p.vision[0]] for d in p.deepstack]
        logits = self.backend.append(self.cache, p.embeds[a:b], p.positions[:, a:b], mask, deep)
        self.ids.extend(p.ids[a:b])
        p.done = b
        self.last_logits = logits
        return logits

    def append(self, seg: Segment, feats: VisionFeatures | None = None) -> torch.Tensor:
        if self._queue:
            raise RuntimeError("Track.append with queued work: flush() first")
        p = _join(self._deferred + [self._prepare(seg, feats)])
        self._deferred = []
        return self._step(p, len(p.ids))

    def append_ids(self, ids: tuple[int, ...] | list[int]) -> torch.Tensor:
        return self.append(Segment(tuple(ids)))

    def greedy(self, bias: torch.Tensor | None, limit: int) -> "_Greedy":
        if self._queue or self._deferred:
            raise RuntimeError("Track.greedy with queued or deferred work: flush() first")
        return _Greedy(self, self.backend.greedy(self.cache, self.next_pos, bias, limit))

    def defer_ids(self, ids: tuple[int, ...] | list[int]) -> None:
        if self._queue:
            raise RuntimeError("Track.defer_ids with queued work: flush() first")
        if ids:
            self._deferred.append(self._prepare(Segment(tuple(ids)), None))

    def queue(self, seg: Segment, feats: VisionFeatures | None = None) -> None:
        self._queue.append(self._prepare(seg, feats))

    def work(self, deadline: float) -> bool:
        """Append queued tokens in slices until ``deadline`` (perf_counter seconds)."""
        while self._queue and time.perf_counter() < deadline:
            p = self._queue[0]
            self._step(p, self.slice_tokens)
            if p.done == len(p.ids):
                self._queue.popleft()
        return bool(self._queue)

    def flush(self) -> None:
        while self._queue:
            p = self._queue.popleft()
            self._step(p, len(p.ids) - p.done)
        if self._deferred:
            p, self._deferred = _join(self._deferred), []
            self._step(p, len(p.ids))

    def release(self) -> None:
        self._queue.clear()
        self._deferred = []
        if self.cache is not None:
            self.backend.release(self.cache)
            self.cache = None


class _Greedy:
    """A backend ``GreedyRun`` that keeps the track's ids and positions in step."""

    def __init__(self, track: Track, run):
        self.track, self.run = track, run

    def feed(self, token: int) -> None:
        self.run.feed(token)
        self.track.ids.append(int(token))
        self.track.next_pos += 1
        self.track.last_logits = None

    def next(self) -> int:
        return self.run.next()

    def close(self) -> None:
        self.run.close()


def _join(parts: list[_Prepared]) -> _Prepared:
    """One prepared append from consecutive ones (at most one with vision; none started)."""
    if len(parts) == 1:
        return parts[0]
    if sum(p.vision[1] > p.vision[0] for p in parts) > 1 or any(p.done for p in parts):
        raise ValueError("_join: at most one vision part, none partly appended")
    vision, deep, off = (0, 0), (), 0
    for p in parts:
        if p.vision[1] > p.vision[0]:
            vision, deep = (p.vision[0] + off, p.vision[1] + off), p.deepstack
        off += len(p.ids)
    return _Prepared(tuple(i for p in parts for i in p.ids), torch.cat([p.embeds for p in parts]),
                     torch.cat([p.positions for p in parts], dim=1), vision, deep)
