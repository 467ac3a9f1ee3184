"""Stream structuring (protocol section 5a): per-chunk records -> training samples.

Contract:
* ``build_samples(records, layout, grid_of, windows, loss="balanced", tail=False) -> list[Sample]``:
  sequence unrolling, one ``Sample`` per spoken answer (``ChunkRecord.answer``) of the
  stream, anchored at that answer's chunk; a stream with K answers gives K samples. With
  ``tail``, one more anchored at the last chunk when it is silent, so the silent steps after
  the last answer are supervised too (``anchors`` lists the anchors in order). A
  ``context_only`` chunk is never an anchor and its turn is never supervised (it stays in
  the context, video and turn, as recorded).
* Each sample's context is what the engine would hold at that chunk: the video window
  advanced by ``model.context.advance_window`` from the first chunk (N = 30 s growing to
  N + N' = 45 s, then N' leave at once) and the QA window of ``model.context.plan``
  (M = 10 text-only groups), rendered by the engine's own ``model.prompt.Layout``
  (system prompt; QA turns; per chunk one user turn, video then question, and one
  assistant turn: the answer or ``<|silent|>``). Positions are ``model.rope``'s.
* Supervision (``loss``): "balanced" (protocol section 5): every silent assistant turn and
  the sample's last (target) answer, weight 1/N_silent on silent-turn tokens, 1 on the
  answer; "ce" (the ablation): every assistant turn, weight 1. A turn's supervised tokens
  are its body and its ``<|im_end|>`` (what the model generates; the newline after it is
  template, never generated).
* ``grid_of(frames) -> (h, w)`` is the merged grid the engine's pixel path gives a chunk
  (``ChunkPixels.grid_for``); the sample keeps each window chunk's frames for the vision
  tower (``batch.forward`` runs them through the engine's pixel path).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model import context as ctx
from model.prompt import Layout
from model.rope import segment_positions
from model.train.loss import IGNORE, turn_weights


@dataclass(frozen=True)
class Windows:
    video_s: float = 30.0          # N
    float_s: float = 15.0          # N'
    qa_groups: int = 10            # M
    max_group_rounds: int = 4

    @classmethod
    def for_config(cls, cfg) -> "Windows":
        return cls(cfg.video_window_s, cfg.float_window_s, cfg.qa_window_groups, cfg.max_group_rounds)


@dataclass(frozen=True, eq=False)
class Sample:
    ids: torch.Tensor              # (L,) int64
    positions: torch.Tensor        # (3, L) int64
    labels: torch.Tensor           # (L,) int64: the next token where supervised, else IGNORE
    weights: torch.Tensor          # (L,) float32: w_t of the next token (0 where unsupervised)
    chunks: tuple                  # the window chunks' frames, in order of their video pads

    def __len__(self) -> int:
        return int(self.ids.numel())


def window_start(records, upto: int, windows: Windows) -> float:
    """The engine's video-window start when chunk ``upto`` arrives (cuts as it makes them)."""
    start = records[0].start_s
    for r in records[:upto + 1]:
        start = ctx.advance_window(start, r.t_s, windows.video_s, windows.float_s)
    return start


def build_samples(records, layout: Layout, grid_of, windows: Windows = Windows(),
                  loss: str = "balanced", tail: bool = False) -> list["Sample"]:
    if loss not in ("balanced", "ce"):
        raise ValueError(f"loss must be 'balanced' or 'ce', got {loss!r}")
    tok = layout.tok
    answers = [None if r.answer is None else tuple(tok.encode(r.answer, add_special_tokens=False))
               for r in records]
    rounds = [ctx.Round(i, r.start_s, r.t_s, Layout.clean(r.question) or None, answers[i], True)
              for i, r in enumerate(records)]
    return [render(records, rounds, a, layout, grid_of, windows, loss) for a in anchors(records, tail)]


def anchors(records, tail: bool = False) -> list[int]:
    """The chunks ``build_samples`` anchors its samples at, in its order."""
    out = [i for i, r in enumerate(records) if r.answer is not None and not r.context_only]
    if tail and records and records[-1].answer is None and not records[-1].context_only:
        out.append(len(records) - 1)
    return out


def render(records, rounds, anchor: int, layout: Layout, grid_of, windows: Windows, loss: str) -> Sample:
    """The sample anchored at round ``anchor`` (its answer, or its silence, ends the sample)."""
    start = window_start(records, anchor, windows)
    plan = ctx.plan(rounds[:anchor + 1], start, windows.qa_groups, windows.max_group_rounds)
    segs, turns, frames, seen = [layout.system()], [], [], []
    for qa in plan.qa:
        segs.append(layout.text_turn(qa.text))
        turns.append(len(segs))
        segs.append(layout.answer(qa.answer))
        seen.append(records[qa.key].context_only)
    for r in plan.window:
        fr = records[r.key].frames
        segs.append(layout.chunk(grid_of(fr), r.question))
        frames.append(fr)
        turns.append(len(segs))
        segs.append(layout.answer(r.answer))
        seen.append(records[r.key].context_only)
    silent = [segs[i].ids[0] == layout.sp.silent and len(segs[i]) == len(layout.answer(None))
              for i in turns]
    w_turn = turn_weights(silent, loss, seen)
    ids, pos, labels, weights, p = [], [], [], [], 0
    for i, seg in enumerate(segs):
        positions, p = segment_positions(seg, p)
        pos.append(positions)
        ids.extend(seg.ids)
    labels = [IGNORE] * len(ids)
    weights = [0.0] * len(ids)
    offsets = _offsets(segs)
    template_tail = len(layout.answer(None)) - 2       # the newline(s) after <|im_end|>
    for seg_i, w in zip(turns, w_turn):
        if w == 0:
            continue
        seg = segs[seg_i]
        n_sup = len(seg) - template_tail                # body + <|im_end|>
        for k in range(n_sup):
            j = offsets[seg_i] + k                      # the supervised token's index
            labels[j - 1] = ids[j]                      # predicted at the position before it
            weights[j - 1] = w
    return Sample(torch.tensor(ids, dtype=torch.long), torch.cat(pos, dim=1),
                  torch.tensor(labels, dtype=torch.long), torch.tensor(weights, dtype=torch.float32),
                  tuple(frames))


def _offsets(segs) -> list[int]:
    out, n = [], 0
    for s in segs:
        out.append(n)
        n += len(s)
    return out
