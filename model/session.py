"""``AuraSession``: one conversation over a live stream, with its own KV cache.

Contract (the orchestrator's; one engine thread drives a session):
* ``step(chunk, question=None, cancel=None, allow_speak=True)`` returns a generator of
  app.events: ``StepDecision`` first (``t_s = chunk.t_s``), then, if the model speaks,
  ``ReplyStarted``, ``ReplyDelta``..., ``ReplyEnded`` (``cancelled=True`` when
  ``cancel()`` turned true between tokens). The chunk's user turn is appended to the cache
  (only appended: history is never re-rendered), the first-token logits decide silent vs
  speak (protocol section 4), and the assistant turn is ALWAYS appended -- silent,
  finished, cancelled, or cut short because the caller closed the generator or started
  the next step -- so two user turns never follow each other. A reply abandoned before its
  first token keeps that token (already chosen): never an empty assistant turn. ``allow_speak=False``
  (proactive remarks switched off) records a silent turn whatever the model chose;
  ``p_silent`` is still the model's: p(``<|silent|>``) + p(``<|im_end|>``) of the first
  token (both mean silence), with the two parts in ``p_silent_token`` and ``p_im_end``.
* ``maintain(budget_s) -> bool`` spends up to ``budget_s`` seconds building the shadow
  cache for the next window cut; True if shadow work remains.
* ``reset()`` empties the context (same model); ``close()`` frees the caches.
* ``context_tokens``: tokens of the live context; ``context_ids()``: those ids;
  ``next_token_logits()`` the raw logits that follow them; ``plan_segments(start)`` the
  context a fresh run would build (for dumps and the equivalence tests).

Folded turn ends (``fold_turn_end=True``, the default): the end of an assistant turn
(``<|silent|><|im_end|>\n`` of a silent turn, the ``<|im_end|>\n`` of a reply, plus a last
reply token not fed yet) needs no logits, so it is deferred on the live track
(``Track.defer_ids``) and goes into the cache in the same forward as the next chunk's user
turn: one pass over the weights per step instead of two. Readers see the same context as
without folding: ``context_ids``/``context_tokens`` include the deferred ids,
``next_token_logits`` flushes them first; a window cut drops them with the old cache (the
shadow holds every finished turn in full); ``reset``/``close`` discard the cache anyway.

Window cuts (model/context.py): vision features are computed once per chunk and kept while
the chunk is in the video window. Once a completed round ends after the next cut point,
the post-cut context is known, and a shadow track is queued with it (system prompt, QA
text from everything before the cut point, the chunk turns after it) and then extended
round by round; ``maintain`` appends it in slices. At the cut, pending shadow work is
finished synchronously (correct even if ``maintain`` never ran), the shadow becomes the
live cache and the old one is released. The live cache then equals a fresh run over the
new context (tests/model/test_equivalence.py).

Cache size: a backend with a fixed cache (``backend.max_tokens``, the fast one: sized by
``model.vlm.context_budget``) never overflows: before a chunk is appended, if it and a
longest reply would not fit, the window is cut early by N' (repeatedly if needed; the
shadow built for the next cut serves the first one). Only when even the context without
any earlier chunk does not fit does the step raise ``ContextOverflowError`` (one line).

Event times: with a ``clock`` the reply events carry ``clock.now()``; without one all
events of a step carry ``chunk.t_s``. ``reply_id`` is ``f"{session_id}-r{n}"``.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace

import torch

from app.events import ReplyDelta, ReplyEnded, ReplyStarted, StepDecision, VideoChunk
from model import context as ctx
from model.prompt import Layout, Segment
from model.sampling import MAX_TURNS, Sampler, TextStream, apply_bias, p_tokens, repetition_bias
from model.track import Track
from model.vision import VisionFeatures


class ContextOverflowError(RuntimeError):
    """The context cannot fit the backend's cache even with the video window cut early
    (``str(e)`` is one line; call ``reset()``)."""


@dataclass(eq=False)
class _Shadow:
    target_s: float                  # the window start it is being built for
    track: Track
    last_key: int                    # newest round queued into it


class AuraSession:
    def __init__(self, model, session_id: str, clock=None, fold_turn_end: bool = True):
        self.model = model
        self.fold_turn_end = bool(fold_turn_end)
        self.session_id = session_id
        self.cfg = model.cfg
        self._clock = clock
        sp = model.specials
        self.layout = Layout.for_config(model.tokenizer, sp, self.cfg)
        self._banned = torch.tensor(sorted(sp.structural), dtype=torch.long, device=model.device)
        self._stops = (sp.im_end, sp.silent)
        self._active = None
        self._closed = False
        self._n_replies = 0           # kept across reset(): reply ids stay unique
        self._live: Track | None = None
        self._shadow: _Shadow | None = None
        self._init_state()

    # --- state ---------------------------------------------------------------------------
    def _init_state(self) -> None:
        self._rounds: list[ctx.Round] = []
        self._chunks: dict[int, tuple[Segment, VisionFeatures]] = {}   # rounds in the window
        self._window_start: float | None = None
        self._turns: deque[tuple[int, ...]] = deque(maxlen=MAX_TURNS)
        self._next_key = 0
        self._sampler = Sampler(self.cfg.temperature, self.cfg.top_p, self.cfg.seed, self.model.device)
        self._live = self._new_track()
        self._live.append(self.layout.system())

    def _new_track(self) -> Track:
        return Track(self.model.backend, self.model.embed)

    def _drop_tracks(self) -> None:
        for track in (self._live, self._shadow.track if self._shadow else None):
            if track is not None:
                track.release()
        self._live, self._shadow = None, None

    @property
    def context_tokens(self) -> int:
        return self._live.n_tokens + len(self._live.pending_ids) if self._live else 0

    def context_ids(self) -> list[int]:
        return [*self._live.ids, *self._live.pending_ids] if self._live else []

    @property
    def window_start_s(self) -> float | None:
        return self._window_start

    def next_token_logits(self) -> torch.Tensor:
        """The live cache's raw logits for the token after ``context_ids()`` (a copy);
        deferred turn-end ids are appended first."""
        self._live.flush()
        return self._live.last_logits.clone()

    def reset(self) -> None:
        self._finish_active()
        self._drop_tracks()
        self._init_state()

    def close(self) -> None:
        self._finish_active()
        self._drop_tracks()
        self._closed = True

    # --- rendering -------------------------------------------------------------------------
    def plan_segments(self, start_s: float | None) -> list[tuple[Segment, VisionFeatures | None]]:
        """The whole context for window start ``start_s`` as segments (completed rounds,
        plus the chunk turn of a round in progress)."""
        plan = ctx.plan(self._rounds, start_s if start_s is not None else float("-inf"),
                        self.cfg.qa_window_groups, self.cfg.max_group_rounds)
        out: list[tuple[Segment, VisionFeatures | None]] = [(self.layout.system(), None)]
        for qa in plan.qa:
            out += [(self.layout.text_turn(qa.text), None), (self.layout.answer(qa.answer), None)]
        for r in plan.window:
            out.append(self._chunks[r.key])
            if r.done:
                out.append((self.layout.answer(r.answer), None))
        return out

    # --- window cuts and the shadow ----------------------------------------------------------
    def _cut_if_due(self, t_s: float) -> None:
        start = self._window_start
        new = ctx.advance_window(start, t_s, self.cfg.video_window_s, self.cfg.float_window_s)
        if new != start:
            self._cut_to(new)

    def _make_room(self, n_tokens: int, t_s: float) -> None:
        """Cut the window early (by N' at a time) until ``n_tokens`` more and a longest
        reply fit the backend's cache; the new chunk (ending at ``t_s``) always stays."""
        cap = getattr(self.model.backend, "max_tokens", None)
        reserve = self.cfg.max_new_tokens
        while cap is not None and self.context_tokens + n_tokens + reserve > cap:
            new = ctx.cut_point(self._window_start, self.cfg.float_window_s)
            if new >= t_s - ctx.EPS:
                raise ContextOverflowError(
                    f"engine: the context ({self.context_tokens} tokens after cutting the video "
                    f"window) + this chunk ({n_tokens}) + a reply ({reserve}) exceed the cache of "
                    f"{cap} tokens; reset the session, or lower engine.pixel_budget, "
                    "engine.max_new_tokens or engine.qa_window_groups")
            self._cut_to(new)

    def _cut_to(self, new: float) -> None:
        """Move the window start to ``new``: swap in the shadow (or rebuild) and prune."""
        shadow, self._shadow = self._shadow, None
        if shadow is not None and abs(shadow.target_s - new) < ctx.EPS:
            shadow.track.flush()
            fresh = shadow.track
        else:
            if shadow is not None:
                shadow.track.release()
            fresh = self._new_track()
            for seg, feats in self.plan_segments(new):
                fresh.append(seg, feats)
        self._live.release()
        self._live = fresh
        self._window_start = new
        self._rounds = ctx.prune(self._rounds, new, self.cfg.qa_window_groups, self.cfg.max_group_rounds)
        keep = {r.key for r in self._rounds if ctx.in_window(r, new)}
        self._chunks = {k: v for k, v in self._chunks.items() if k in keep}
        self._grow_shadow()

    def _grow_shadow(self) -> None:
        """Start the shadow once the next cut's context is known; queue new rounds into it."""
        if self._window_start is None or not self._rounds or not self._rounds[-1].done:
            return
        target = ctx.cut_point(self._window_start, self.cfg.float_window_s)
        if self._shadow is None:
            if not ctx.in_window(self._rounds[-1], target):
                return
            track = self._new_track()
            for seg, feats in self.plan_segments(target):
                track.queue(seg, feats)
            self._shadow = _Shadow(target, track, self._rounds[-1].key)
            return
        for r in self._rounds:
            if r.key > self._shadow.last_key:
                self._shadow.track.queue(*self._chunks[r.key])
                self._shadow.track.queue(self.layout.answer(r.answer))
                self._shadow.last_key = r.key

    def maintain(self, budget_s: float) -> bool:
        if self._shadow is None:
            return False
        return self._shadow.track.work(time.perf_counter() + max(0.0, budget_s))

    # --- the step ------------------------------------------------------------------------------
    def _finish_active(self) -> None:
        if self._active is not None:
            gen, self._active = self._active, None
            gen.close()

    def step(self, chunk: VideoChunk, question: str | None = None, cancel=None,
             allow_speak: bool = True):
        if self._closed:
            raise RuntimeError(f"session {self.session_id} is closed")
        self._finish_active()
        gen = self._run(chunk, question, cancel, allow_speak)
        self._active = gen
        return gen

    def _now(self, chunk: VideoChunk) -> float:
        return self._clock.now() if self._clock is not None else chunk.t_s

    def _logits(self, raw: torch.Tensor) -> torch.Tensor:
        bias = repetition_bias(self._turns, self.model.exempt) if self.cfg.repetition_penalty else {}
        return apply_bias(raw, bias, self._banned)

    def _run(self, chunk: VideoChunk, question: str | None, cancel, allow_speak: bool):
        t0 = time.perf_counter()
        feats = self.model.vision.encode(chunk.frames)
        if self._window_start is None:
            self._window_start = chunk.start_s
        self._cut_if_due(chunk.t_s)
        q = Layout.clean(question) or None
        key, self._next_key = self._next_key, self._next_key + 1
        seg = self.layout.chunk(feats.grid_hw, q, key)
        self._make_room(len(seg), chunk.t_s)
        self._chunks[key] = (seg, feats)
        self._rounds.append(ctx.Round(key, chunk.start_s, chunk.t_s, q))
        logits = self._logits(self._live.append(seg, feats))
        token = self._sampler.pick(logits)
        # both silence tokens mean silence (protocol section 4): p(silent) is their sum
        p_parts = p_tokens(logits, (self.model.specials.silent, self.model.specials.im_end))
        silent = token in self._stops or not allow_speak
        reply: list[int] = []
        fed = 0
        try:
            step_ms = (time.perf_counter() - t0) * 1000
            yield StepDecision(chunk.t_s, "silent" if silent else "speak", sum(p_parts),
                               self.context_tokens, step_ms, chunk.index, q, *p_parts)
            if silent:
                return
            self._n_replies += 1
            rid, proactive = f"{self.session_id}-r{self._n_replies}", q is None
            yield ReplyStarted(self._now(chunk), rid, proactive)
            stream = TextStream(self.model.decode)
            cancelled = False
            dec = self._decoder()
            try:
                while True:
                    reply.append(token)
                    last = len(reply) >= self.cfg.max_new_tokens
                    if not last:     # queue the token's forward first: the device computes it
                        dec.feed(token)                     # while the text goes out
                        fed = len(reply)
                    delta = stream.push(token)
                    if delta:
                        yield ReplyDelta(self._now(chunk), rid, delta)
                    if last:
                        break
                    if cancel is not None and cancel():
                        cancelled = True
                        break
                    token = dec.next()
                    if token in self._stops:
                        break
            finally:
                dec.close()          # the cache holds exactly the fed tokens from here on
            self._finish_round(key, tuple(reply), fed)
            yield ReplyEnded(self._now(chunk), rid, stream.text, proactive, step_ms,
                             len(reply), cancelled)
        finally:
            if self._rounds and self._rounds[-1].key == key and not self._rounds[-1].done:
                # abandoned before the first token went into the reply: keep the token
                # already chosen, never an empty assistant turn (issue 12 item 7)
                answer = None if silent else tuple(reply) or (token,)
                self._finish_round(key, answer, fed)

    def _decoder(self):
        """How reply tokens are fed and chosen: greedy on the device, one step ahead, where
        the backend can (model/fast/greedy.py; the same tokens: argmax of the same biased
        logits), else one append and one host-side pick per token."""
        if self._sampler.temperature <= 0.0 and hasattr(self.model.backend, "greedy"):
            bias = repetition_bias(self._turns, self.model.exempt) if self.cfg.repetition_penalty else {}
            vec = None
            if bias or (self._banned is not None and self._banned.numel()):
                vec = apply_bias(torch.zeros(self.model.backend.vocab, device=self.model.backend.device),
                                 bias, self._banned)
            return self._live.greedy(vec, limit=self.cfg.max_new_tokens - 1)
        return _Stepwise(self)

    def _finish_round(self, key: int, answer: tuple[int, ...] | None, fed: int) -> None:
        """Append the assistant turn (minus the ``fed`` reply tokens already in the cache);
        with folding it is deferred into the next append."""
        seg = self.layout.answer(answer)
        if self.fold_turn_end:
            self._live.defer_ids(seg.ids[fed:])
        else:
            self._live.append_ids(seg.ids[fed:])
        self._rounds[-1] = replace(self._rounds[-1], answer=answer, done=True)
        self._turns.append(answer or ())
        self._grow_shadow()


class _Stepwise:
    """The general decoder: each fed token is one append, each next token a host-side pick
    (any sampler, any backend)."""

    def __init__(self, session: AuraSession):
        self.session, self.raw = session, None

    def feed(self, token: int) -> None:
        self.raw = self.session._live.append_ids((token,))

    def next(self) -> int:
        s = self.session
        return s._sampler.pick(s._logits(self.raw))

    def close(self) -> None:
        pass
