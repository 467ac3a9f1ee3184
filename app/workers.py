"""Shared worker threads: one owns the VLM for every session, one owns the ASR model.

Contract:
* ``EngineWorker`` is the only thread that touches engine sessions (KV caches, GPU state).
  ``submit(owner, job)`` queues a ``StepJob`` or a ``CallJob``; jobs of one owner run in
  order, owners are served in turn, token by token (a long reply of one session does not
  stall another's silent step). Every event a step yields goes to ``job.on_event`` with its
  time restamped on the job's (the session's) clock; then a ``StepFinished`` follows, also after an
  exception (reported as an ``ErrorEvent`` with ``source="engine"``). With nothing to do,
  the worker gives engine sessions idle time through ``session.maintain(budget_s)``.
* ``AsrWorker`` transcribes utterances one at a time for all sessions; each result is a
  ``UserText`` (source ``voice``, ``speech_end_s`` = the utterance end, ``asr_ms``) or an
  ``ErrorEvent`` passed to the job's callback.
Both stop cleanly with ``stop()``; callbacks must only enqueue (they run on the worker).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable

from app.clock import Clock
from app.events import ErrorEvent, SpeechEnded, UserText, VideoChunk
from app.orchestrator import StepFinished

Sink = Callable[[object], None]


@dataclass
class StepJob:
    engine_session: Any
    chunk: VideoChunk
    question: str | None
    allow_speak: bool
    cancel: Callable[[], bool]
    on_event: Sink
    clock: Clock


@dataclass
class CallJob:
    """Run ``fn()`` on the engine thread (reset, close); errors go to ``on_error``."""
    fn: Callable[[], None]
    on_error: Sink | None = None
    clock: Clock | None = None


class EngineWorker:
    def __init__(self, idle_budget_s: float = 0.02, name: str = "engine") -> None:
        self._idle_budget_s = idle_budget_s
        self._inbox: queue.Queue = queue.Queue()
        self._pending: "OrderedDict[str, deque]" = OrderedDict()
        self._active: "OrderedDict[str, tuple[StepJob, Any]]" = OrderedDict()
        self._maintain: "OrderedDict[str, Any]" = OrderedDict()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "EngineWorker":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def submit(self, owner: str, job: StepJob | CallJob) -> None:
        self._inbox.put((owner, job))

    def forget(self, owner: str) -> None:
        """Drop an owner's queued steps (a closed session); a step in flight is closed."""
        self._inbox.put((owner, "forget"))

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            busy = bool(self._active) or any(self._pending.values())
            self._drain(block=not busy and not self._maintain)
            if self._stop.is_set():
                break
            self._start_next_steps()
            if self._active:
                self._advance_one_round()
            elif self._maintain:
                self._idle_work()
        for job, gen in self._active.values():
            gen.close()

    def _drain(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while item is not None:
            owner, job = item
            if job == "forget":
                self._pending.pop(owner, None)
                self._maintain.pop(owner, None)
                active = self._active.pop(owner, None)
                if active is not None:
                    active[1].close()
            else:
                self._pending.setdefault(owner, deque()).append(job)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
        self._stop.set()

    def _start_next_steps(self) -> None:
        for owner, jobs in list(self._pending.items()):
            while jobs and owner not in self._active:
                job = jobs.popleft()
                if isinstance(job, CallJob):
                    self._call(job)
                    continue
                gen = job.engine_session.step(job.chunk, question=job.question,
                                              cancel=job.cancel, allow_speak=job.allow_speak)
                self._active[owner] = (job, gen)
                self._maintain[owner] = job.engine_session
            if not jobs:
                self._pending.pop(owner, None)

    def _call(self, job: CallJob) -> None:
        try:
            job.fn()
        except Exception as e:  # reported, the worker keeps serving other sessions
            if job.on_error is not None:
                t_s = job.clock.now() if job.clock is not None else 0.0
                job.on_error(ErrorEvent(t_s, "engine", f"{type(e).__name__}: {e}"))

    def _advance_one_round(self) -> None:
        for owner in list(self._active):
            job, gen = self._active[owner]
            try:
                event = next(gen)
            except StopIteration:
                del self._active[owner]
                job.on_event(StepFinished(job.clock.now(), job.chunk.index))
                continue
            except Exception as e:
                del self._active[owner]
                job.on_event(ErrorEvent(job.clock.now(), "engine",
                                        f"step failed: {type(e).__name__}: {e}", fatal=True))
                job.on_event(StepFinished(job.clock.now(), job.chunk.index))
                continue
            job.on_event(dataclasses.replace(event, t_s=job.clock.now()))

    def _idle_work(self) -> None:
        owner, session = next(iter(self._maintain.items()))
        self._maintain.move_to_end(owner)
        try:
            more = session.maintain(self._idle_budget_s)
        except Exception:   # maintenance is retried by the next step, which rebuilds synchronously
            more = False
        if not more:
            self._maintain.pop(owner, None)
            if not self._maintain:
                return
        time.sleep(0)   # let producers in between slices


@dataclass
class AsrJob:
    utterance: SpeechEnded
    on_result: Sink
    clock: Clock


class AsrWorker:
    def __init__(self, transcriber: Any, name: str = "asr") -> None:
        self._asr = transcriber
        self._inbox: queue.Queue = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "AsrWorker":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def submit(self, job: AsrJob) -> None:
        try:
            self._inbox.put_nowait(job)
        except queue.Full:
            job.on_result(ErrorEvent(job.clock.now(), "asr", "speech recognition is overloaded: "
                                     "an utterance was dropped"))

    def _run(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            t0 = time.perf_counter()
            try:
                text = self._asr.transcribe(job.utterance.pcm)
            except Exception as e:
                job.on_result(ErrorEvent(job.clock.now(), "asr", f"transcription failed: {e}"))
                continue
            ms = (time.perf_counter() - t0) * 1000
            job.on_result(UserText(job.clock.now(), text, source="voice",
                                   speech_end_s=job.utterance.t_s, asr_ms=round(ms, 1)))
