"""Device boundaries: small, transport-neutral protocols with real adapters and file twins.

Contract (architecture rules 8 and 14):
* ``Camera``: ``start()`` opens it (raises ``DeviceError`` with one line if it cannot);
  ``latest() -> VideoFrame | None`` is the newest frame (RGB uint8, ``t_s`` = capture
  time on the session clock), never blocking; ``stop()`` releases it. Real cameras keep
  the newest frame from a reader thread. A camera that vanishes later reports through the
  ``on_error`` callback given to its constructor and keeps returning its last frame.
* ``Microphone``: ``start(on_block, on_error)`` delivers ``AudioBlock``s of exactly
  ``BLOCK_SAMPLES`` (512) 16 kHz mono float32 samples, ``t_s`` = capture time of the first
  sample; callbacks run on the microphone's own thread and must only copy and enqueue. A
  missing device or a failure is an ``ErrorEvent`` through ``on_error`` (never an
  exception out of ``start``); ``stop()`` ends delivery.
* ``Speaker``: ``play(audio: SpeechAudio)`` queues one sentence (any sample rate; the
  speaker resamples) behind what is queued; ``flush(reply_id=None)`` drops queued and
  playing audio of that reply (all audio when None) at once; ``playing() -> str | None``
  is the reply id audible now; ``stop()`` closes it.
* ``PlaybackReference`` (local speakers only): ``played_audio(t_s, n)`` returns the ``n``
  samples (16 kHz mono float32) that the speaker sent out from stream time ``t_s`` on,
  zeros where it was silent or does not remember. ``speech.echo`` uses it as the echo
  reference. Browser transports do their own echo cancellation and need not offer it.

Adapters: ``app.devices.camera`` (OpenCVCamera, FileCamera), ``app.devices.sound``
(SoundDeviceMicrophone, SoundDeviceSpeaker), ``app.devices.twins`` (WavMicrophone,
WavSpeaker); ``app.devices.listing.list_devices()`` prints what is attached.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from app.events import AudioBlock, ErrorEvent, SpeechAudio, VideoFrame

OnBlock = Callable[[AudioBlock], None]
OnError = Callable[[ErrorEvent], None]


class DeviceError(RuntimeError):
    """A device cannot be opened or used (one human-readable line)."""


@runtime_checkable
class Camera(Protocol):
    def start(self) -> None: ...

    def latest(self) -> VideoFrame | None: ...

    def stop(self) -> None: ...


@runtime_checkable
class Microphone(Protocol):
    def start(self, on_block: OnBlock, on_error: OnError) -> None: ...

    def stop(self) -> None: ...


@runtime_checkable
class Speaker(Protocol):
    def play(self, audio: SpeechAudio) -> None: ...

    def flush(self, reply_id: str | None = None) -> None: ...

    def playing(self) -> str | None: ...

    def stop(self) -> None: ...


@runtime_checkable
class PlaybackReference(Protocol):
    def played_audio(self, t_s: float, n: int) -> np.ndarray: ...


def parse_device(spec: str) -> int | str | None:
    """A config device string as sounddevice/OpenCV want it: "" -> None (default),
    digits -> index, anything else -> a name (substring match is the library's)."""
    spec = spec.strip()
    if not spec:
        return None
    return int(spec) if spec.isdigit() else spec
