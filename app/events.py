"""The event vocabulary: every message that passes between stages of a session.

Contract: events are small frozen dataclasses, each with a stream timestamp ``t_s``
(seconds since the session's stream started, per the session clock) and a class-level
``type`` string that names it in logs (``events.jsonl``, replay output). Units are in the
field names. Audio is mono float32 in [-1, 1] with its ``sample_rate`` alongside; images
are RGB uint8 arrays of shape (H, W, 3). ``to_record`` turns an event into a JSON-ready
dict without its media arrays (the recorder stores media separately).

Nothing here imports heavy libraries; numpy is the only dependency.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

Decision = Literal["silent", "speak"]
State = Literal["idle", "watching", "listening", "thinking", "speaking"]


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One camera frame as captured (RGB uint8, H x W x 3)."""
    type: ClassVar[str] = "frame"
    t_s: float
    image: np.ndarray


@dataclass(frozen=True, eq=False)
class AudioBlock:
    """A block of microphone audio (mono float32)."""
    type: ClassVar[str] = "audio"
    t_s: float
    pcm: np.ndarray
    sample_rate: int


@dataclass(frozen=True, eq=False)
class VideoChunk:
    """One engine step's video: 1 s of stream at 2 fps (2 frames), or a partial chunk of
    1 frame closed early because a question arrived. ``t_s`` is the chunk's end."""
    type: ClassVar[str] = "chunk"
    t_s: float
    start_s: float
    frames: tuple[np.ndarray, ...]
    index: int = 0


@dataclass(frozen=True)
class SpeechStarted:
    """VAD: the user started speaking at ``t_s`` (pre-roll included in the later pcm)."""
    type: ClassVar[str] = "speech_start"
    t_s: float


@dataclass(frozen=True, eq=False)
class SpeechEnded:
    """VAD: an utterance ended at ``t_s``; ``pcm`` holds it from ``start_s`` (16 kHz)."""
    type: ClassVar[str] = "speech_end"
    t_s: float
    start_s: float
    pcm: np.ndarray
    sample_rate: int = 16000


@dataclass(frozen=True)
class UserText:
    """A user question, transcribed (``source='voice'``) or typed (``source='typed'``)."""
    type: ClassVar[str] = "user"
    t_s: float
    text: str
    source: Literal["voice", "typed"] = "voice"
    speech_end_s: float | None = None
    asr_ms: float | None = None


@dataclass(frozen=True)
class StepDecision:
    """The engine's silent/speak decision for one chunk (protocol section 4). ``p_silent``
    is the first token's probability of silence: ``p_silent_token`` (``<|silent|>``) +
    ``p_im_end`` (``<|im_end|>``), both parts logged (None where an engine gives no parts)."""
    type: ClassVar[str] = "step"
    t_s: float
    decision: Decision
    p_silent: float
    context_tokens: int
    step_ms: float
    chunk_index: int = 0
    question: str | None = None
    p_silent_token: float | None = None
    p_im_end: float | None = None


@dataclass(frozen=True)
class ReplyStarted:
    type: ClassVar[str] = "reply_start"
    t_s: float
    reply_id: str
    proactive: bool


@dataclass(frozen=True)
class ReplyDelta:
    """New reply text (append to what came before for the same ``reply_id``)."""
    type: ClassVar[str] = "reply_delta"
    t_s: float
    reply_id: str
    text: str


@dataclass(frozen=True)
class ReplyEnded:
    """A reply is complete (or was cancelled); ``text`` is all of it."""
    type: ClassVar[str] = "reply"
    t_s: float
    reply_id: str
    text: str
    proactive: bool
    ttft_ms: float
    n_tokens: int = 0
    cancelled: bool = False


@dataclass(frozen=True, eq=False)
class SpeechAudio:
    """Synthesised assistant speech for one sentence of a reply."""
    type: ClassVar[str] = "tts_audio"
    t_s: float
    reply_id: str
    pcm: np.ndarray
    sample_rate: int
    sentence_index: int = 0
    text: str = ""
    last: bool = False


@dataclass(frozen=True)
class BargeIn:
    """The user talked over reply ``reply_id``: stop it everywhere."""
    type: ClassVar[str] = "barge_in"
    t_s: float
    reply_id: str


@dataclass(frozen=True)
class StatusChanged:
    type: ClassVar[str] = "status"
    t_s: float
    state: State


@dataclass(frozen=True)
class Latency:
    """Per-turn latency, stream seconds of each stage (None where it did not happen)."""
    type: ClassVar[str] = "latency"
    t_s: float
    reply_id: str
    speech_end_s: float | None = None
    transcript_s: float | None = None
    first_token_s: float | None = None
    first_audio_s: float | None = None


@dataclass(frozen=True)
class SettingChanged:
    """A user control changed: ``name`` in hands_free | proactive | voice."""
    type: ClassVar[str] = "setting"
    t_s: float
    name: str
    value: bool


@dataclass(frozen=True)
class ContextReset:
    """The user reset the conversation: the model's context starts empty again."""
    type: ClassVar[str] = "reset"
    t_s: float


@dataclass(frozen=True)
class ErrorEvent:
    """Something failed; ``message`` is one human-readable line. ``fatal`` ends the session."""
    type: ClassVar[str] = "error"
    t_s: float
    source: str
    message: str
    fatal: bool = False


Event = (VideoFrame | VideoChunk | AudioBlock | SpeechStarted | SpeechEnded | UserText | StepDecision
         | ReplyStarted | ReplyDelta | ReplyEnded | SpeechAudio | BargeIn | StatusChanged
         | Latency | SettingChanged | ContextReset | ErrorEvent)

_MEDIA_FIELDS = {"image", "pcm", "frames"}


def to_record(event: Any) -> dict[str, Any]:
    """A JSON-ready dict: ``{"t": t_s, "type": ..., **fields}`` minus media arrays."""
    out: dict[str, Any] = {"t": round(float(event.t_s), 3), "type": event.type}
    for f in dataclasses.fields(event):
        if f.name == "t_s" or f.name in _MEDIA_FIELDS:
            continue
        value = getattr(event, f.name)
        if isinstance(value, float):
            value = round(value, 4)
        out[f.name] = value
    if isinstance(event, SpeechAudio):
        out["duration_s"] = round(len(event.pcm) / event.sample_rate, 3)
    if isinstance(event, SpeechEnded):
        out["duration_s"] = round(len(event.pcm) / event.sample_rate, 3)
    if isinstance(event, VideoChunk):
        out["n_frames"] = len(event.frames)
    return out

