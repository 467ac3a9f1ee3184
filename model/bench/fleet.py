"""N live sessions of the app on one engine, in real time: the driver of ``model.bench.capacity``.

Contract:
* ``Fleet(model, worker)`` runs N sessions through the app's own path: each is an
  ``app.live.LiveSession`` (its control thread, ``FrameSampler``, ``Orchestrator`` with its
  backlog/skip policy) whose engine steps go to the shared ``app.workers.EngineWorker``,
  with proactive remarks and the voice off (``Settings(proactive=False, voice=False)``:
  random weights would speak at every chunk; TTS is not part of the engine's capacity).
* ``Fleet.run(n, seconds, ...) -> FleetRecord``: warms N fresh engine sessions to a
  steady-state context (``warm_chunks`` + a stagger of 1-s silent chunks fed directly on
  the engine thread, times before 0, so window cuts are out of phase), then opens N live
  sessions whose camera (``CameraIO``) gives a new 640x480 frame every 1/fps s of the
  session's real-time clock; each session asks a question every ``question_every_s``
  (staggered); its reply is cut after a number of tokens drawn from ``reply_tokens``
  through the step's ``cancel`` hook (how the engine ends a reply early; random weights
  never stop by themselves). Only events inside ``[settle_s, settle_s + seconds]`` of each
  session's clock are kept.
* Engine time: every engine session the worker drives is a ``TimedSession`` (same
  behaviour; each ``next()`` of a step and each ``maintain`` is timed), so the record has
  the engine thread's busy time split into steps and idle work.
* Imports of ``app.live`` / ``speech.*`` happen here only (light: numpy, threads); nothing
  of gradio, faster-whisper, coqui or prometheus is imported.
"""
from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from app.events import (ErrorEvent, ReplyEnded, ReplyStarted, StepDecision,
                        UserText, VideoChunk, VideoFrame)

QUESTIONS = ("What is on the table right now?", "What colour is the cup?",
             "Is anyone in the room?", "What did I just pick up?", "What is written on the box?")


class OffsetClock:
    """A session's clock (seconds since ``start``, a ``time.monotonic()`` value): sessions
    keep their own stream time, and ``start + now()`` puts them on one time line."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.monotonic() if start is None else start

    def now(self) -> float:
        return time.monotonic() - self.start

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            time.sleep(dt_s)


class CameraIO:
    """A camera at ``fps``: frame k appears at clock time k / fps (a ``SessionIO``, no audio)."""

    def __init__(self, clock: OffsetClock, frames, fps: float = 2.0) -> None:
        self.clock, self.frames, self.fps = clock, frames, fps
        self._k, self._frame = -1, None

    def latest_frame(self) -> VideoFrame | None:
        k = math.floor(self.clock.now() * self.fps + 1e-9)
        if k < 0:
            return None
        if k != self._k:
            self._k, self._frame = k, VideoFrame(k / self.fps, self.frames[k % len(self.frames)])
        return self._frame

    def play(self, audio) -> None:
        pass

    def flush(self, reply_id: str | None = None) -> None:
        pass

    def playing(self) -> str | None:
        return None


class Meter:
    """Engine-thread busy intervals ``(end_monotonic, seconds, kind)``; written by one thread."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, str]] = []

    def add(self, t0: float, kind: str) -> None:
        t1 = time.monotonic()
        self.spans.append((t1, t1 - t0, kind))

    def busy_s(self, t_from: float, t_to: float, kind: str | None = None) -> float:
        return sum(d for end, d, k in list(self.spans)
                   if t_from <= end <= t_to and (kind is None or k == kind))


class TimedSession:
    """An engine session whose step generators and ``maintain`` calls are timed; a reply to
    a question is cancelled after a drawn number of tokens (the engine asks ``cancel()``
    once per token after the first)."""

    def __init__(self, inner, meter: Meter, reply_tokens=None, rng: random.Random | None = None) -> None:
        self.inner, self.meter = inner, meter
        self.reply_tokens, self.rng = reply_tokens, rng or random.Random(0)

    def step(self, chunk, question=None, cancel=None, allow_speak=True):
        if question is not None and self.reply_tokens is not None:
            cancel = self._bounded(cancel, self.rng.randint(*self.reply_tokens))
        return self._timed(self.inner.step(chunk, question=question, cancel=cancel, allow_speak=allow_speak))

    @staticmethod
    def _bounded(cancel, limit: int):
        calls = [0]

        def bounded() -> bool:
            calls[0] += 1                    # asked after token calls[0]
            return calls[0] >= limit or (cancel is not None and cancel())
        return bounded

    def _timed(self, gen):
        try:
            while True:
                t0 = time.monotonic()
                try:
                    ev = next(gen)
                except StopIteration:
                    return
                finally:
                    self.meter.add(t0, "step")
                yield ev
        finally:
            gen.close()

    def maintain(self, budget_s: float) -> bool:
        t0 = time.monotonic()
        try:
            return self.inner.maintain(budget_s)
        finally:
            self.meter.add(t0, "maintain")

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()


class _Quiet:
    """A speech-probability model for a microphone that hears nothing (no audio is sent)."""

    def prob(self, pcm) -> float:
        return 0.0

    def reset(self) -> None:
        pass


class _Handout:
    """``runtime.model`` for LiveSession: hands out the prepared, warmed engine sessions."""

    def __init__(self) -> None:
        self.ready: dict[str, TimedSession] = {}

    def new_session(self, session_id: str, clock=None):
        return self.ready.pop(session_id)


@dataclass
class BenchRuntime:
    """What ``app.live.LiveSession`` needs from ``app.build.Runtime`` (same methods)."""
    engine_worker: object
    model: _Handout = field(default_factory=_Handout)
    asr_worker: object = None

    def new_sampler(self):
        from app.sampler import FrameSampler
        return FrameSampler()

    def new_echo_guard(self, io):
        from app.config import SpeechConfig
        from speech.echo import EchoGuard
        from speech.vad import VadSegmenter
        cfg = SpeechConfig()
        return EchoGuard(cfg, vad=VadSegmenter(cfg, model=_Quiet()))

    def new_tts_stream(self, emit, clock, on_error):
        from speech.tts import TTSStream
        return TTSStream(None, emit, clock, on_error=on_error)    # voice off: never fed


@dataclass
class SessionLog:
    """What one session's listener saw (times on the session's clock)."""
    clock: OffsetClock
    chunks: dict = field(default_factory=dict)           # index -> chunk end t_s
    decisions: list = field(default_factory=list)        # (t_s, index, step_ms, question?, context)
    asks: list = field(default_factory=list)             # UserText t_s
    replies: dict = field(default_factory=dict)          # id -> [start, end, n_tokens, ask_t]
    errors: list = field(default_factory=list)           # (t_s, source, message, fatal)

    def __call__(self, ev) -> None:                      # on the session's control thread
        if isinstance(ev, VideoChunk):
            self.chunks[ev.index] = ev.t_s
        elif isinstance(ev, StepDecision):
            self.decisions.append((ev.t_s, ev.chunk_index, ev.step_ms, ev.question is not None,
                                   ev.context_tokens))
        elif isinstance(ev, UserText):
            self.asks.append(ev.t_s)
        elif isinstance(ev, ReplyStarted):
            self.replies[ev.reply_id] = [ev.t_s, None, 0, self.asks[-1] if self.asks else None]
        elif isinstance(ev, ReplyEnded) and ev.reply_id in self.replies:
            r = self.replies[ev.reply_id]
            r[1], r[2] = ev.t_s, ev.n_tokens
        elif isinstance(ev, ErrorEvent):
            self.errors.append((ev.t_s, ev.source, ev.message, ev.fatal))


@dataclass
class FleetRecord:
    n: int
    logs: list
    window: tuple[float, float]          # on each session's clock
    window_mono: tuple[float, float]     # the union, on time.monotonic()
    meter: Meter
    warm_s: float
    context_after_warm: list


def frames_640x480(n: int = 8, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


class Fleet:
    def __init__(self, model, worker, *, fps: float = 2.0, frames=None) -> None:
        self.model, self.worker, self.fps = model, worker, fps
        self.frames = frames if frames is not None else frames_640x480()
        self.meter = Meter()
        self.runtime = BenchRuntime(worker)
        self._round = 0

    def on_engine(self, owner: str, fn) -> None:
        """Run ``fn()`` on the engine thread and wait for it (errors re-raised here)."""
        from app.workers import CallJob
        done, err = threading.Event(), []

        def job():
            try:
                fn()
            except Exception as e:          # handed to the caller's thread
                err.append(e)
            finally:
                done.set()
        self.worker.submit(owner, CallJob(job))
        done.wait()
        if err:
            raise err[0]

    def _make(self, session_id: str, chunks: int, out: list) -> None:
        """A new engine session fed ``chunks`` silent 1-s chunks ending at time 0 (each
        followed by its shadow work in full), appended to ``out``."""
        session = self.model.new_session(session_id)
        out.append(session)
        pair = (self.frames[0], self.frames[1])
        for k in range(chunks):
            start = float(k - chunks)
            chunk = VideoChunk(t_s=start + 1.0, start_s=start, frames=pair, index=k)
            for _ev in session.step(chunk, allow_speak=False):
                pass
            while session.maintain(1.0):
                pass

    def run(self, n: int, *, seconds: float, settle_s: float = 3.0, warm_chunks: int = 30,
            stagger_chunks: int = 15, question_every_s: float = 20.0, reply_tokens=(12, 40),
            seed: int = 0, progress=print, stop: threading.Event | None = None,
            opened: threading.Event | None = None) -> FleetRecord:
        """See the module contract; ``stop`` ends the run early (set by another thread),
        ``opened`` is set once the live sessions run."""
        from app.live import LiveSession
        from app.orchestrator import Settings
        self._round += 1
        ids = [f"n{n}r{self._round}s{i}" for i in range(n)]
        t0 = time.monotonic()
        context = []
        for i, sid in enumerate(ids):        # made and warmed on the engine thread, as the app's are used
            made: list = []
            chunks = warm_chunks + (stagger_chunks * i) // max(1, n)
            self.on_engine(sid, lambda s=sid, c=chunks, out=made: self._make(s, c, out))
            inner = made[0]
            context.append(inner.context_tokens)
            self.runtime.model.ready[sid] = TimedSession(inner, self.meter, tuple(reply_tokens),
                                                         random.Random(seed * 1000 + n * 100 + i))
        warm_s = time.monotonic() - t0
        progress(f"  warmed {n} session(s) in {warm_s:.1f} s (context {min(context)}-{max(context)} tokens)")
        settings = Settings(hands_free=False, proactive=False, voice=False)
        logs, lives = [], []
        rng = random.Random(seed * 1000 + n)
        for sid in ids:
            clock = OffsetClock()
            log = SessionLog(clock)
            live = LiveSession(sid, self.runtime, CameraIO(clock, self.frames, self.fps), clock, settings, [log])
            logs.append(log)
            lives.append(live)
        end = settle_s + seconds
        # question times on each session's clock: staggered over one period
        plan = [[settle_s + question_every_s * (i + 0.5) / n + question_every_s * j
                 for j in range(int(seconds // question_every_s) + 1)] for i in range(n)]
        plan = [[t for t in qs if t < end - 0.5] for qs in plan]
        shown = 0.0
        if opened is not None:
            opened.set()
        try:
            while True:
                now = [log.clock.now() for log in logs]
                if min(now) >= end or (stop is not None and stop.is_set()):
                    end = min(end, max(now))
                    break
                if now[0] - shown >= 30.0:
                    shown = now[0]
                    progress(f"  N={n}: {now[0]:.0f} of {end:.0f} s")
                for i, (live, qs) in enumerate(zip(lives, plan)):
                    if qs and now[i] >= qs[0]:
                        qs.pop(0)
                        live.ask(QUESTIONS[rng.randrange(len(QUESTIONS))])
                time.sleep(0.005)
        finally:
            for live in lives:
                live.close()
            self.on_engine("fleet-sync", lambda: None)     # the closes queued before it are done
        starts = [log.clock.start for log in logs]
        return FleetRecord(n, logs, (settle_s, end), (min(starts) + settle_s, max(starts) + end),
                           self.meter, warm_s, context)
