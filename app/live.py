"""One live session: devices in, orchestrator decisions carried out, events out.

Contract: ``LiveSession(session_id, runtime, io, clock, settings, listeners)`` runs one
control thread that owns the session's pure parts (frame sampler, the echo guard with its
VAD and barge-in rule, orchestrator) and carries out the orchestrator's commands: engine steps go to the shared
``EngineWorker``, utterances to the shared ``AsrWorker``, reply text to this session's
``TTSStream``, audio to its speaker. Inputs arrive through ``post()`` (thread-safe, bounded:
audio overflow is an error event, video keeps only the newest frame) from device callbacks,
workers and the UI. Every event is given to each listener (UI view model, recorder) on the
control thread. ``snapshot()`` returns an immutable view for the UI. A failure inside the
session is reported as an ``ErrorEvent`` and resets the session's context; other sessions
are unaffected. ``close()`` stops the thread and frees the engine session.
A context reset restarts the sampler at the next frame (no backlog; chunk indices go on).
Switching hands-free off or pressing Talk ends the VAD's utterance in progress at once
(transcribed then), so no stale utterance becomes a question after a later turn.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from app import orchestrator as orc
from app.clock import Clock
from app.events import (AudioBlock, BargeIn, ErrorEvent, SpeechAudio, SpeechEnded,
                        SpeechStarted, UserText, VideoFrame)
from app.workers import AsrJob, CallJob, StepJob

Listener = Callable[[object], None]
AUDIO_QUEUE_BLOCKS = 320          # ~10 s of 512-sample blocks at 16 kHz
POLL_S = 0.05


class SessionIO(Protocol):
    """What a session needs from its transport (local devices or a browser connection)."""
    def latest_frame(self) -> VideoFrame | None: ...
    def play(self, audio: SpeechAudio) -> None: ...
    def flush(self, reply_id: str | None = None) -> None: ...
    def playing(self) -> str | None: ...


@dataclass(frozen=True)
class Snapshot:
    session_id: str
    status: str
    settings: orc.Settings
    ptt_active: bool


class LiveSession:
    def __init__(self, session_id: str, runtime: Any, io: SessionIO, clock: Clock,
                 settings: orc.Settings = orc.Settings(), listeners: list[Listener] | None = None) -> None:
        self.session_id = session_id
        self._rt = runtime
        self._io = io
        self._clock = clock
        self._listeners = list(listeners or [])
        self._orc = orc.Orchestrator(settings)
        self._sampler = runtime.new_sampler()
        self._guard = runtime.new_echo_guard(io)
        self._tts = runtime.new_tts_stream(self._on_tts_audio, clock, self._post_event)
        self._inbox: queue.Queue = queue.Queue()
        self._audio_pending = 0
        self._audio_lock = threading.Lock()
        self._cancel_flags: dict[str, threading.Event] = {}
        self._step_cancel = threading.Event()
        self._last_frame_t: float | None = None
        self._close_partial_asap = False
        self._playing: str | None = None
        self._ptt: list[np.ndarray] | None = None
        self._ptt_start_s = 0.0
        self._samples: dict[str, int] = {}     # audio samples played so far per reply
        self._closed = threading.Event()
        self._engine_session = runtime.model.new_session(session_id)   # owned by the engine worker from now on
        self._thread = threading.Thread(target=self._run, name=f"session-{session_id}", daemon=True)
        self._thread.start()

    # -- inputs (any thread) ---------------------------------------------------------------
    def post_audio(self, block: AudioBlock) -> None:
        with self._audio_lock:
            if self._audio_pending >= AUDIO_QUEUE_BLOCKS:
                overflow = True
            else:
                self._audio_pending += 1
                overflow = False
        if overflow:
            self.post(ErrorEvent(self._clock.now(), "audio", "microphone audio overflowed: the "
                                 "session is behind; some audio was dropped"))
            return
        self._inbox.put(("audio", block))

    def post(self, item: object) -> None:
        """Queue an event or a control (``orc.SetOption``, ``orc.ResetContext``) for the session."""
        self._inbox.put(("event", item))

    def ask(self, text: str) -> None:
        self.post(UserText(self._clock.now(), text, source="typed"))

    def set_option(self, name: str, value: bool) -> None:
        self.post(orc.SetOption(self._clock.now(), name, bool(value)))

    def reset(self) -> None:
        self.post(orc.ResetContext(self._clock.now()))

    def push_to_talk(self, pressed: bool) -> None:
        self._inbox.put(("ptt", pressed))

    def snapshot(self) -> Snapshot:
        return Snapshot(self.session_id, self._orc.status, self._orc.settings, self._ptt is not None)

    def add_listener(self, listener: Listener) -> None:
        self._inbox.put(("listen", listener))

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._inbox.put(("stop", None))
        self._thread.join(5.0)
        self._tts.close()
        self._rt.engine_worker.forget(self.session_id)
        self._rt.engine_worker.submit(self.session_id, CallJob(self._engine_session.close))

    # -- the control thread ----------------------------------------------------------------
    def _post_event(self, event: object) -> None:
        self.post(event)

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                kind, item = self._inbox.get(timeout=POLL_S)
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind == "stop":
                    return
                self._dispatch(kind, item)
                self._poll_devices()
            except Exception as e:  # contain the failure to this session
                self._fail(e)

    def _dispatch(self, kind: str, item: Any) -> None:
        if kind == "audio":
            with self._audio_lock:
                self._audio_pending -= 1
            self._on_audio(item)
        elif kind == "event":
            self._feed(item)
            if isinstance(item, orc.SetOption) and item.name == "hands_free" and not item.value:
                self._finish_listening()
        elif kind == "ptt":
            self._on_ptt(item)
        elif kind == "listen":
            self._listeners.append(item)

    def _fail(self, error: Exception) -> None:
        now = self._clock.now()
        self._emit(ErrorEvent(now, "session", f"{type(error).__name__}: {error} "
                              "(the session's context was reset)", fatal=False))
        self._feed(orc.ResetContext(now))

    def _feed(self, event: object) -> None:
        now = self._clock.now()
        if isinstance(event, _Played):
            audio = event.audio
            if audio.text:
                self._guard.spoken(audio.text, now)
            self._emit(audio)
            heard = self._samples.pop(audio.reply_id, 0) + len(audio.pcm)
            if not audio.last:
                self._samples[audio.reply_id] = heard
            elif heard == 0:
                self._feed(orc.NoAudio(now, audio.reply_id))
            return
        if isinstance(event, UserText) and event.source == "voice" and \
                self._guard.is_echo_text(event.text, now):
            self._emit(ErrorEvent(now, "echo", f"ignored a transcript that repeats the assistant: "
                                  f"{event.text[:80]!r}"))
            return
        if isinstance(event, ErrorEvent) and event.source == "engine" and event.fatal:
            self._emit(event)
            self._feed(orc.ResetContext(now))
            return
        for command in self._orc.handle(event, now):
            self._apply(command)

    def _poll_devices(self) -> None:
        frame = self._io.latest_frame()
        if frame is not None and frame.t_s != self._last_frame_t:
            self._last_frame_t = frame.t_s
            for chunk in self._sampler.feed(frame):
                self._feed(chunk)
            if self._close_partial_asap:
                self._close_partial(self._clock.now())
        playing = self._io.playing()
        if playing != self._playing:
            now = self._clock.now()
            if self._playing is not None:
                self._feed(orc.PlaybackFinished(now, self._playing))
            self._playing = playing
            if playing is not None:
                self._feed(orc.PlaybackStarted(now, playing))

    def _on_audio(self, block: AudioBlock) -> None:
        self._emit(block)
        if self._ptt is not None:
            self._ptt.append(block.pcm)
            return
        if not self._orc.settings.hands_free:
            return
        heard = self._guard.process(block, self._playing)
        for ev in heard.events:
            self._feed(ev)
        if heard.barge_in is not None:
            self._feed(heard.barge_in)

    def _on_ptt(self, pressed: bool) -> None:
        now = self._clock.now()
        if pressed and self._ptt is None:
            self._finish_listening()
            self._ptt, self._ptt_start_s = [], now
            self._feed(SpeechStarted(now))
            if self._playing is not None:
                self._feed(BargeIn(now, self._playing))
        elif not pressed and self._ptt is not None:
            pcm = np.concatenate(self._ptt) if self._ptt else np.zeros(0, np.float32)
            self._ptt = None
            self._feed(SpeechEnded(now, self._ptt_start_s, pcm))

    def _finish_listening(self) -> None:
        """The mic stops reaching the VAD (hands-free off, push-to-talk pressed): end the
        utterance in progress now, so it is transcribed at once, never after a later turn."""
        for ev in self._guard.finish(self._clock.now()):
            self._feed(ev)

    def _close_partial(self, now: float) -> None:
        chunk = self._sampler.close_partial(now)
        self._close_partial_asap = chunk is None
        if chunk is not None:
            self._feed(chunk)

    # -- carrying out commands ---------------------------------------------------------------
    def _apply(self, c: object) -> None:
        if isinstance(c, orc.Publish):
            self._emit(c.event)
        elif isinstance(c, orc.RunStep):
            self._step_cancel = threading.Event()
            question = c.question.text if c.question is not None else None
            self._rt.engine_worker.submit(self.session_id, StepJob(
                self._engine_session, c.chunk, question, c.allow_speak,
                self._step_cancel.is_set, self._post_event, self._clock))
        elif isinstance(c, orc.CancelReply):
            self._step_cancel.set()
        elif isinstance(c, orc.Transcribe):
            if len(c.utterance.pcm):
                self._rt.asr_worker.submit(AsrJob(c.utterance, self._post_event, self._clock))
        elif isinstance(c, orc.Speak):
            self._tts.feed(c.delta)
        elif isinstance(c, orc.SpeakEnd):
            self._tts.end(c.reply_id)
        elif isinstance(c, orc.StopAudio):
            self._tts.cancel(c.reply_id)
            self._io.flush(c.reply_id)
        elif isinstance(c, orc.ClosePartialChunk):
            self._close_partial(c.t_s)
        elif isinstance(c, orc.ResetEngine):
            # start again at the next frame's time (no backlog of the seconds since the
            # stream began); chunk indices go on counting, so they stay unique
            self._sampler.restart()
            self._close_partial_asap = False
            self._guard.reset()
            self._rt.engine_worker.submit(self.session_id, CallJob(self._reset_engine, self._post_event,
                                                                   self._clock))
        else:
            raise TypeError(f"unknown command {c!r}")

    def _reset_engine(self) -> None:
        self._engine_session.reset()

    def _on_tts_audio(self, audio: SpeechAudio) -> None:
        """TTS thread: play and record the audio (the speaker queues; it never blocks)."""
        self._io.play(audio)
        self.post(_Played(audio))

    def _emit(self, event: object) -> None:
        for listener in self._listeners:
            listener(event)


@dataclass(frozen=True)
class _Played:
    """Internal: audio handed to the speaker (recorded on the control thread)."""
    audio: SpeechAudio

