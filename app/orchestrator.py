"""The orchestrator: every turn-taking decision of one session, as a pure state machine.

Contract: ``Orchestrator(settings)``; ``handle(event, now_s) -> list[Command]``. It reads
events (video chunks, VAD, transcripts, engine output, playback reports, barge-ins, user
controls) and returns commands for the thin threaded shell (app/live.py) to carry out. It
never sleeps, never reads a clock and touches no device or model, so tests drive it event
by event.

Policy:
* Each VideoChunk becomes one engine step, in order; one step in flight at a time. If the
  engine falls behind, at most ``MAX_BACKLOG`` chunks wait; older ones are dropped with one
  error event per overload episode (the model sees fewer chunks, never a broken context).
  A chunk is published (for the recorder) when it goes to the engine: exactly what the
  model saw.
* A question (typed, or voice after ASR) is answered at once: the orchestrator asks for the
  current partial chunk to be closed, and the question rides on the first chunk that ends at
  or after it. A new question cancels a reply still being generated or spoken.
* Proactive remarks off: steps without a question run with ``allow_speak=False`` (the
  engine records silence, so the context matches what the user experienced).
* Barge-in: a ``BargeIn`` cancels generation and stops that reply's audio everywhere;
  late deltas of a cancelled reply are never spoken.
* Text from outside (typed or transcribed questions, the model's reply text) is sanitised
  (``speech.text.sanitize_text``: no control characters, no U+FFFD) before anything is
  published, spoken or asked, so captions, recordings and the voice never get them.
* A setting set to the value it already has changes nothing and publishes nothing.
* Latency per answered question: speech end -> transcript -> first token -> first audio,
  published as a ``Latency`` event once the first audio plays (or, with the voice off or
  nothing speakable in the reply, without a first-audio time).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from app.events import (BargeIn, ContextReset, ErrorEvent, Latency, ReplyDelta, ReplyEnded,
                        ReplyStarted, SettingChanged, SpeechEnded, SpeechStarted, StatusChanged,
                        StepDecision, UserText, VideoChunk)
from speech.text import sanitize_text

MAX_BACKLOG = 3
REMEMBER_CANCELLED = 64   # reply ids kept as cancelled (ids are unique per session)


# --- inputs only the shell produces ------------------------------------------------------
@dataclass(frozen=True)
class StepFinished:
    """The engine finished the step for chunk ``chunk_index`` (silent or after its reply)."""
    t_s: float
    chunk_index: int


@dataclass(frozen=True)
class PlaybackStarted:
    t_s: float
    reply_id: str


@dataclass(frozen=True)
class PlaybackFinished:
    t_s: float
    reply_id: str


@dataclass(frozen=True)
class NoAudio:
    """The voice produced nothing for ``reply_id`` (nothing speakable in it)."""
    t_s: float
    reply_id: str


@dataclass(frozen=True)
class SetOption:
    """A user control: ``name`` in hands_free | proactive | voice."""
    t_s: float
    name: str
    value: bool


@dataclass(frozen=True)
class ResetContext:
    t_s: float


# --- commands ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Publish:
    event: object


@dataclass(frozen=True)
class RunStep:
    chunk: VideoChunk
    question: UserText | None
    allow_speak: bool


@dataclass(frozen=True)
class CancelReply:
    reply_id: str


@dataclass(frozen=True)
class Transcribe:
    utterance: SpeechEnded


@dataclass(frozen=True)
class Speak:
    delta: ReplyDelta


@dataclass(frozen=True)
class SpeakEnd:
    reply_id: str


@dataclass(frozen=True)
class StopAudio:
    reply_id: str


@dataclass(frozen=True)
class ClosePartialChunk:
    t_s: float


@dataclass(frozen=True)
class ResetEngine:
    pass


Command = (Publish | RunStep | CancelReply | Transcribe | Speak | SpeakEnd | StopAudio
           | ClosePartialChunk | ResetEngine)


@dataclass(frozen=True)
class Settings:
    hands_free: bool = True
    proactive: bool = True
    voice: bool = True


@dataclass
class _Turn:
    """Latency bookkeeping for one answered question."""
    question: UserText
    reply_id: str | None = None
    first_token_s: float | None = None


@dataclass
class _State:
    backlog: deque = field(default_factory=deque)
    in_flight: int | None = None            # chunk index of the step running
    pending_question: UserText | None = None
    active_reply: str | None = None         # being generated
    playing_reply: str | None = None        # being heard
    cancelled: deque = field(default_factory=lambda: deque(maxlen=REMEMBER_CANCELLED))
    speaking_user: bool = False
    overloaded: bool = False
    turns: dict = field(default_factory=dict)   # reply_id -> _Turn
    asking: _Turn | None = None             # question sent to the engine, reply not started
    status: str = "watching"


class Orchestrator:
    def __init__(self, settings: Settings = Settings()) -> None:
        self.settings = settings
        self._s = _State()

    # -- public ------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._s.status

    @property
    def busy(self) -> bool:
        return self._s.in_flight is not None

    def handle(self, event: object, now_s: float) -> list[Command]:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is None:
            raise TypeError(f"Orchestrator cannot handle {type(event).__name__}")
        out: list[Command] = handler(event, now_s)
        return out + self._status_change(now_s)

    # -- video and engine ----------------------------------------------------------------
    def _on_VideoChunk(self, chunk: VideoChunk, now_s: float) -> list[Command]:
        s = self._s
        out: list[Command] = []
        s.backlog.append(chunk)
        if len(s.backlog) > MAX_BACKLOG:
            dropped = s.backlog.popleft()
            if not s.overloaded:
                s.overloaded = True
                out.append(Publish(ErrorEvent(now_s, "engine", f"the model is slower than real time: "
                                              f"skipping video (first skipped chunk {dropped.index})")))
        return out + self._dispatch(now_s)

    def _dispatch(self, now_s: float) -> list[Command]:
        s = self._s
        if s.in_flight is not None or not s.backlog:
            return []
        chunk = s.backlog.popleft()
        if not s.backlog:
            s.overloaded = False
        question = None
        if s.pending_question is not None and chunk.t_s >= s.pending_question.t_s - 1e-6:
            question, s.pending_question = s.pending_question, None
            s.asking = _Turn(question)
        s.in_flight = chunk.index
        allow = question is not None or self.settings.proactive
        return [Publish(chunk), RunStep(chunk, question, allow)]   # published: what the model saw

    def _on_StepDecision(self, ev: StepDecision, now_s: float) -> list[Command]:
        return [Publish(ev)]

    def _on_ReplyStarted(self, ev: ReplyStarted, now_s: float) -> list[Command]:
        s = self._s
        s.active_reply = ev.reply_id
        if s.asking is not None and not ev.proactive:
            s.asking.reply_id = ev.reply_id
            s.asking.first_token_s = ev.t_s
            s.turns[ev.reply_id] = s.asking
            s.asking = None
        return [Publish(ev)]

    def _on_ReplyDelta(self, ev: ReplyDelta, now_s: float) -> list[Command]:
        ev = replace(ev, text=sanitize_text(ev.text))
        out: list[Command] = [Publish(ev)]
        if self.settings.voice and ev.reply_id not in self._s.cancelled:
            out.append(Speak(ev))
        return out

    def _on_ReplyEnded(self, ev: ReplyEnded, now_s: float) -> list[Command]:
        s = self._s
        ev = replace(ev, text=sanitize_text(ev.text))
        out: list[Command] = [Publish(ev)]
        if s.active_reply == ev.reply_id:
            s.active_reply = None
        if ev.reply_id in s.cancelled or ev.cancelled:
            return out
        if self.settings.voice:
            out.append(SpeakEnd(ev.reply_id))
        else:
            out += self._latency(ev.reply_id, None, now_s)
        return out

    def _on_StepFinished(self, ev: StepFinished, now_s: float) -> list[Command]:
        s = self._s
        if s.in_flight == ev.chunk_index:
            s.in_flight = None
        s.asking = None
        return self._dispatch(now_s)

    # -- the user ------------------------------------------------------------------------
    def _on_SpeechStarted(self, ev: SpeechStarted, now_s: float) -> list[Command]:
        self._s.speaking_user = True
        return [Publish(ev)]

    def _on_SpeechEnded(self, ev: SpeechEnded, now_s: float) -> list[Command]:
        self._s.speaking_user = False
        return [Publish(ev), Transcribe(ev)]

    def _on_UserText(self, ev: UserText, now_s: float) -> list[Command]:
        s = self._s
        text = sanitize_text(ev.text).strip()
        if not text:
            return []
        ev = replace(ev, text=text)
        out: list[Command] = [Publish(ev)]
        out += self._stop_reply(now_s)
        if s.pending_question is not None:   # two questions before a chunk closed: join them
            ev = replace(ev, text=f"{s.pending_question.text} {ev.text}",
                         speech_end_s=s.pending_question.speech_end_s or ev.speech_end_s)
        s.pending_question = ev
        out.append(ClosePartialChunk(now_s))
        return out

    def _on_BargeIn(self, ev: BargeIn, now_s: float) -> list[Command]:
        return [Publish(ev)] + self._stop_reply(now_s)

    def _stop_reply(self, now_s: float) -> list[Command]:
        s = self._s
        out: list[Command] = []
        for reply_id in {s.active_reply, s.playing_reply} - {None}:
            if reply_id == s.active_reply:
                out.append(CancelReply(reply_id))
            if reply_id not in s.cancelled:
                s.cancelled.append(reply_id)
            out.append(StopAudio(reply_id))
        if s.playing_reply is not None:
            s.playing_reply = None
        return out

    # -- playback ------------------------------------------------------------------------
    def _on_PlaybackStarted(self, ev: PlaybackStarted, now_s: float) -> list[Command]:
        s = self._s
        if ev.reply_id in s.cancelled:
            return [StopAudio(ev.reply_id)]
        s.playing_reply = ev.reply_id
        return self._latency(ev.reply_id, ev.t_s, now_s)

    def _on_NoAudio(self, ev: NoAudio, now_s: float) -> list[Command]:
        return self._latency(ev.reply_id, None, now_s)

    def _on_PlaybackFinished(self, ev: PlaybackFinished, now_s: float) -> list[Command]:
        s = self._s
        if s.playing_reply == ev.reply_id:
            s.playing_reply = None
        return []

    def _latency(self, reply_id: str, first_audio_s: float | None, now_s: float) -> list[Command]:
        turn = self._s.turns.pop(reply_id, None)
        if turn is None:
            return []
        q = turn.question
        return [Publish(Latency(now_s, reply_id, speech_end_s=q.speech_end_s, transcript_s=q.t_s,
                                first_token_s=turn.first_token_s, first_audio_s=first_audio_s))]

    # -- controls ------------------------------------------------------------------------
    def _on_SetOption(self, ev: SetOption, now_s: float) -> list[Command]:
        if ev.name not in ("hands_free", "proactive", "voice"):
            raise ValueError(f"unknown option {ev.name!r}")
        if getattr(self.settings, ev.name) == bool(ev.value):
            return []                 # no change (the page may send one twice)
        self.settings = replace(self.settings, **{ev.name: bool(ev.value)})
        out: list[Command] = [Publish(SettingChanged(now_s, ev.name, bool(ev.value)))]
        if ev.name == "voice" and not ev.value:
            out += self._stop_audio_only()
        return out

    def _stop_audio_only(self) -> list[Command]:
        s = self._s
        if s.playing_reply is None:
            return []
        reply_id, s.playing_reply = s.playing_reply, None
        return [StopAudio(reply_id)]

    def _on_ResetContext(self, ev: ResetContext, now_s: float) -> list[Command]:
        s = self._s
        out = self._stop_reply(now_s)
        s.backlog.clear()
        s.pending_question = None
        s.asking = None
        s.turns.clear()
        return out + [ResetEngine(), Publish(ContextReset(now_s))]

    def _on_ErrorEvent(self, ev: ErrorEvent, now_s: float) -> list[Command]:
        return [Publish(ev)]

    # -- status --------------------------------------------------------------------------
    def _status_change(self, now_s: float) -> list[Command]:
        s = self._s
        if s.playing_reply is not None:
            status = "speaking"
        elif s.speaking_user:
            status = "listening"
        elif s.pending_question is not None or s.asking is not None or (
                s.active_reply is not None and s.active_reply in s.turns):
            status = "thinking"
        else:
            status = "watching"
        if status == s.status:
            return []
        s.status = status
        return [Publish(StatusChanged(now_s, status))]
