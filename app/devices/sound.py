"""Local microphone and speaker through sounddevice (PortAudio).

Contract (see ``app.devices.base``):
* ``SoundDeviceMicrophone(device=None, clock=None)``: ``device`` is a sounddevice index,
  a name (substring), or None for the default input (config strings: "" = default,
  digits = index). It opens the device at its own
  default rate, mono, low latency; the PortAudio callback only copies the buffer and
  enqueues it with its capture time (the clock's now minus the buffer's duration and
  the stream's nominal input latency); the microphone's thread turns buffers into
  512-sample 16 kHz ``AudioBlock``s (``Reblocker``) and calls ``on_block``. Problems are ``ErrorEvent``s through ``on_error``: a missing
  device or PortAudio (fatal for the microphone, not the session), lost audio (queue
  overflow or driver overrun), sustained clipping, and a device that stops delivering
  (unplugged).
* ``SoundDeviceSpeaker(device=None, clock=None, on_error=None, latency_s=0.1)`` opens the
  output (a 100 ms device buffer: robust on a busy machine, and short enough that a
  flush is audible within 150 ms) at construction (``DeviceError`` with one line if it cannot). ``play`` resamples the
  sentence to the device rate on the caller's thread and queues it; the PortAudio
  callback copies queued samples out (silence when idle) and taps what it wrote, with the
  time it will be heard (counted in samples from the stream's start plus its nominal
  latency, re-synchronised with the clock after underruns), into a 10 s
  ``AudioTimeline`` at 16 kHz (``played_audio``, the echo reference). ``flush`` drops queued audio at once (what the driver already holds,
  up to ``latency_s``, still plays). ``playing()`` is the reply audible now.
* Both count ``frames_done``, the frames their device callback has handled: a liveness
  gauge (some drivers, e.g. ALSA's PulseAudio plugin, take a second or two before a new
  stream really runs).
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from app.clock import Clock, MonotonicClock
from app.devices.base import DeviceError, OnBlock, OnError, parse_device
from app.events import ErrorEvent, SpeechAudio
from speech.audio import SAMPLE_RATE, AudioTimeline, ClipMonitor, Reblocker, Resampler, resample

_BUFFER_S = 0.02
_RESYNC_S = 0.25


def _import_sounddevice():
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise DeviceError(f"sounddevice/PortAudio is not usable ({e}); pip install sounddevice and "
                          "apt-get install libportaudio2") from None
    return sd


def _stream_latency(stream) -> float:
    """The stream's nominal latency in seconds. Per-callback ADC/DAC times are not used:
    through ALSA's PulseAudio plugin they jump by hundreds of ms when a sink wakes up."""
    latency = stream.latency
    latency = latency[0] if isinstance(latency, tuple) else latency
    return float(latency) if 0.0 <= float(latency) < 1.0 else 0.0


def _describe(device: int | str | None) -> str:
    return "the default device" if device is None else repr(device)


class SoundDeviceMicrophone:
    """A local microphone delivering 16 kHz blocks on its own thread."""

    def __init__(self, device: int | str | None = None, clock: Clock | None = None) -> None:
        self.device = parse_device(device) if isinstance(device, str) else device
        self.clock = clock or MonotonicClock()
        self.sample_rate = 0
        self._stream = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=400)   # 8 s of 20 ms buffers
        self._lost = 0
        self._latency_s = 0.0
        self.frames_done = 0

    def start(self, on_block: OnBlock, on_error: OnError) -> None:
        def fail(message: str) -> None:
            on_error(ErrorEvent(t_s=self.clock.now(), source="mic", message=message))
        try:
            sd = _import_sounddevice()
            info = sd.query_devices(self.device, kind="input")
            self.sample_rate = int(info["default_samplerate"])
            self._stream = sd.InputStream(device=self.device, samplerate=self.sample_rate, channels=1,
                                          dtype="float32", blocksize=int(self.sample_rate * _BUFFER_S),
                                          latency="low", callback=self._callback)
            self._latency_s = _stream_latency(self._stream)
            self._stream.start()
        except DeviceError as e:
            fail(str(e))
            return
        except (ValueError, sd.PortAudioError) as e:
            fail(f"microphone {_describe(self.device)} cannot be opened ({e}); "
                 "see python launch.py --list-devices")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._pump, args=(on_block, on_error), name="mic", daemon=True)
        self._thread.start()

    def _callback(self, indata, frames, time_info, status) -> None:
        t_s = self.clock.now() - self._latency_s - frames / self.sample_rate
        self.frames_done += frames
        try:
            self._queue.put_nowait((indata[:, 0].copy(), t_s, bool(status.input_overflow)))
        except queue.Full:
            self._lost += 1

    def _pump(self, on_block: OnBlock, on_error: OnError) -> None:
        reblocker, clip = Reblocker(self.sample_rate), ClipMonitor()
        reported_lost = 0
        while not self._stop.is_set():
            try:
                pcm, t_s, overflow = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stream is not None and not self._stream.active and not self._stop.is_set():
                    on_error(ErrorEvent(t_s=self.clock.now(), source="mic",
                                        message="the microphone stopped delivering audio (unplugged?)"))
                    return
                continue
            if overflow or self._lost > reported_lost:
                reported_lost = self._lost
                on_error(ErrorEvent(t_s=t_s, source="mic", message="microphone audio was lost (the system is overloaded)"))
            warning = clip.check(pcm, t_s)
            if warning:
                on_error(ErrorEvent(t_s=t_s, source="mic", message=warning))
            for block in reblocker.feed(pcm, t_s):
                on_block(block)

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


@dataclass
class _Queued:
    reply_id: str
    pcm: np.ndarray          # at the device rate
    pos: int = 0


class SoundDeviceSpeaker:
    """A local speaker with a reply-aware output queue and a playback reference."""

    def __init__(self, device: int | str | None = None, clock: Clock | None = None,
                 on_error: OnError | None = None, latency_s: float = 0.1) -> None:
        sd = _import_sounddevice()
        device = parse_device(device) if isinstance(device, str) else device
        self.device, self.clock, self.on_error = device, clock or MonotonicClock(), on_error
        try:
            info = sd.query_devices(device, kind="output")
            self.sample_rate = int(info["default_samplerate"])
            self._channels = max(1, min(2, int(info["max_output_channels"])))
            self._stream = sd.OutputStream(device=device, samplerate=self.sample_rate, channels=self._channels,
                                           dtype="float32", blocksize=int(self.sample_rate * _BUFFER_S),
                                           latency=latency_s, callback=self._callback)
            self._latency_s = _stream_latency(self._stream)
        except (ValueError, sd.PortAudioError) as e:
            raise DeviceError(f"speaker {_describe(device)} cannot be opened ({e}); "
                              "see python launch.py --list-devices") from None
        self._lock = threading.Lock()
        self._queued: deque[_Queued] = deque()
        self._audible: tuple[str, float] | None = None    # (reply id, heard until t_s)
        self._next_heard_s: float | None = None
        self._timeline = AudioTimeline(10.0)
        self._timeline_lock = threading.Lock()
        self._taps: queue.SimpleQueue = queue.SimpleQueue()
        self._stopped = threading.Event()
        self.frames_done = 0
        self._tap_thread = threading.Thread(target=self._tap, name="speaker-tap", daemon=True)
        self._tap_thread.start()
        self._stream.start()

    def play(self, audio: SpeechAudio) -> None:
        if self._stopped.is_set() or len(audio.pcm) == 0:
            return
        pcm = resample(np.asarray(audio.pcm, np.float32), audio.sample_rate, self.sample_rate)
        with self._lock:
            self._queued.append(_Queued(audio.reply_id, pcm))

    def flush(self, reply_id: str | None = None) -> None:
        with self._lock:
            self._queued = deque(q for q in self._queued if reply_id is not None and q.reply_id != reply_id)
            if self._audible is not None and (reply_id is None or self._audible[0] == reply_id):
                self._audible = None

    def playing(self) -> str | None:
        with self._lock:
            if self._audible is not None and self.clock.now() < self._audible[1]:
                return self._audible[0]
            return self._queued[0].reply_id if self._queued else None

    def _heard_at(self, frames: int) -> float:
        """When this callback's first sample will be heard: a running sample count (the
        device clock), re-anchored to the wall clock when it drifts by more than
        ``_RESYNC_S`` (an underrun, or a burst of callbacks the driver did not keep)."""
        now_heard = self.clock.now() + self._latency_s
        if self._next_heard_s is None or abs(self._next_heard_s - now_heard) > _RESYNC_S:
            self._next_heard_s = now_heard
        heard_at = self._next_heard_s
        self._next_heard_s += frames / self.sample_rate
        return heard_at

    def _callback(self, outdata, frames, time_info, status) -> None:
        out = np.zeros(frames, np.float32)
        heard_at = self._heard_at(frames)
        with self._lock:
            filled = 0
            while filled < frames and self._queued:
                q = self._queued[0]
                take = min(frames - filled, len(q.pcm) - q.pos)
                out[filled:filled + take] = q.pcm[q.pos:q.pos + take]
                q.pos += take
                filled += take
                self._audible = (q.reply_id, heard_at + filled / self.sample_rate)
                if q.pos >= len(q.pcm):
                    self._queued.popleft()
        outdata[:] = out[:, None]
        self.frames_done += frames
        self._taps.put((out, heard_at))

    def _tap(self) -> None:
        to_16k = Resampler(self.sample_rate, SAMPLE_RATE)
        while not self._stopped.is_set():
            try:
                out, heard_at = self._taps.get(timeout=0.5)
            except queue.Empty:
                if not self._stream.active and not self._stopped.is_set():
                    if self.on_error is not None:
                        self.on_error(ErrorEvent(t_s=self.clock.now(), source="speaker",
                                                 message="the speaker stopped playing (unplugged?)"))
                    return
                continue
            pcm16k = to_16k.feed(out)
            with self._timeline_lock:
                self._timeline.write(heard_at, pcm16k)

    def played_audio(self, t_s: float, n: int) -> np.ndarray:
        with self._timeline_lock:
            return self._timeline.read(t_s, n)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._stream.stop()
        self._stream.close()
        self._tap_thread.join(timeout=5)
