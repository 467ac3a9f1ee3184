"""Audio basics: unit constants, sample conversion, streaming resampling, fixed-size blocks.

Contract:
* ``SAMPLE_RATE`` (16 kHz) and ``BLOCK_SAMPLES`` (512 = 32 ms) are the unit of every
  speech stage: VAD, echo suppression and ASR all take mono float32 in [-1, 1] at 16 kHz.
* ``to_mono_float32(pcm)`` accepts int16 / int32 / uint8 / float arrays, 1-D or 2-D
  (frames x channels, or channels x frames when the first axis is the short one, as
  WebRTC frames come), and returns a 1-D float32 copy: channels averaged, integers scaled
  to [-1, 1], NaN/inf replaced by 0 and values clipped to [-1, 1].
* ``Resampler(in_rate, out_rate)`` is a streaming band-limited (windowed-sinc polyphase)
  resampler: ``feed(x)`` returns what can be computed so far, ``flush()`` the rest; the
  concatenation equals ``resample(whole, in_rate, out_rate)`` exactly, whatever the
  chunking. Output sample ``k`` sits at input time ``k / out_rate``.
* ``Reblocker(in_rate).feed(pcm, t_s)`` turns arbitrary device buffers (any dtype, any
  channel count, any rate) into ``AudioBlock``s of exactly ``BLOCK_SAMPLES`` 16 kHz mono
  float32 samples; each block's ``t_s`` is the stream time of its first sample. Times are
  counted in samples from the first buffer's ``t_s``; when a buffer arrives more than
  ``max_gap_s`` later than the samples account for (the device dropped audio), the count
  re-anchors forward so block times stay on the stream clock. ``flush()`` pads and emits
  the last partial block.
* ``read_audio(path)`` reads a sound file as (mono float32, rate) or raises
  ``AudioInputError`` with one readable line; ``write_wav`` writes 16-bit PCM.
* ``AudioTimeline(capacity_s)`` remembers the last ``capacity_s`` of a 16 kHz signal by
  stream time: ``write(t_s, pcm)`` / ``read(t_s, n)`` (zeros where nothing was written);
  local speakers use it to answer "what did I play at time t" for echo suppression.
* ``ClipMonitor`` counts clipped samples and says (at most every ``every_s``) when the
  input is clipping, for devices to surface as a non-fatal ``ErrorEvent``.

numpy and soundfile only.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from app.events import AudioBlock

SAMPLE_RATE = 16000
BLOCK_SAMPLES = 512
BLOCK_S = BLOCK_SAMPLES / SAMPLE_RATE


class AudioInputError(ValueError):
    """Audio that cannot be used (unreadable file, wrong shape, no samples)."""


def to_mono_float32(pcm: np.ndarray) -> np.ndarray:
    """Any-dtype, any-layout PCM as a 1-D float32 array in [-1, 1] (a new array)."""
    x = np.asarray(pcm)
    if x.ndim == 0 or x.ndim > 2:
        raise AudioInputError(f"audio must be 1-D or 2-D (frames x channels), got shape {x.shape}")
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32, copy=True)
    else:
        raise AudioInputError(f"unsupported audio sample type {x.dtype}")
    if x.ndim == 2:
        channels_first = x.shape[0] < x.shape[1] and x.shape[0] <= 8
        x = x.mean(axis=1 if not channels_first else 0, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0, out=x)


class Resampler:
    """Streaming windowed-sinc polyphase resampler between two integer rates."""

    def __init__(self, in_rate: int, out_rate: int, zero_crossings: int = 16) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioInputError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._up, self._down = self.out_rate // g, self.in_rate // g
        cutoff = min(1.0, self._up / self._down) * 0.92     # of the input Nyquist
        half = int(math.ceil(zero_crossings / cutoff))     # taps each side, input samples
        offsets = np.arange(-half + 1, half + 1)           # input index - floor(t)
        dist = np.arange(self._up)[:, None] / self._up - offsets[None, :]
        window = 0.5 + 0.5 * np.cos(np.pi * np.clip(dist / half, -1.0, 1.0))
        bank = np.sinc(cutoff * dist) * window
        self._bank = (bank / bank.sum(axis=1, keepdims=True)).astype(np.float32)
        self._half = half
        self._offsets = offsets
        self._buf = np.zeros(half, np.float32)   # virtual silence before the first sample
        self._buf_start = -half                  # input index of _buf[0]
        self._n_in = 0                           # real input samples received
        self._k = 0                              # next output index

    @property
    def identity(self) -> bool:
        return self._up == self._down

    def _produce(self, k_end: int) -> np.ndarray:
        if k_end <= self._k:
            return np.zeros(0, np.float32)
        k = np.arange(self._k, k_end, dtype=np.int64)
        pos = k * self._down
        base, phase = pos // self._up, pos % self._up
        idx = (base - self._buf_start)[:, None] + self._offsets[None, :]
        out = np.einsum("ij,ij->i", self._buf[idx], self._bank[phase]).astype(np.float32)
        self._k = k_end
        keep_from = (self._k * self._down) // self._up - self._half + 1 - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out

    def feed(self, x: np.ndarray) -> np.ndarray:
        """Append mono float32 input; return the output samples computable so far."""
        x = np.asarray(x, np.float32).reshape(-1)
        if self.identity:
            return x.copy()
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        total = self._buf_start + len(self._buf)
        # output k is computable when floor(k*down/up) + half <= total - 1
        k_end = ((total - self._half) * self._up + self._down - 1) // self._down
        return self._produce(max(k_end, self._k))

    def flush(self) -> np.ndarray:
        """The remaining output for the input given so far (zero-padded at the end)."""
        if self.identity:
            return np.zeros(0, np.float32)
        self._buf = np.concatenate([self._buf, np.zeros(self._half, np.float32)])
        k_end = -(-self._n_in * self._up // self._down)   # ceil(n * up / down)
        return self._produce(k_end)


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole mono float32 signal (same filter as the streaming ``Resampler``)."""
    r = Resampler(in_rate, out_rate)
    if r.identity:
        return np.asarray(pcm, np.float32).copy()
    return np.concatenate([r.feed(pcm), r.flush()])


class Reblocker:
    """Device buffers in, exact 512-sample 16 kHz mono float32 ``AudioBlock``s out."""

    def __init__(self, in_rate: int, max_gap_s: float = 0.25) -> None:
        self.in_rate = int(in_rate)
        self._resampler = Resampler(self.in_rate, SAMPLE_RATE)
        self._max_gap_s = max_gap_s
        self._pending = np.zeros(0, np.float32)
        self._anchor_s: float | None = None   # stream time of input sample 0 (after re-anchoring)
        self._n_in = 0                         # input samples fed
        self._n_out = 0                        # 16 kHz samples emitted in blocks

    def feed(self, pcm: np.ndarray, t_s: float) -> list[AudioBlock]:
        """``pcm``'s first sample was captured at stream time ``t_s``."""
        x = to_mono_float32(pcm)
        if len(x) == 0:
            return []
        expected = None if self._anchor_s is None else self._anchor_s + self._n_in / self.in_rate
        if expected is None:
            self._anchor_s = float(t_s)
        elif t_s - expected > self._max_gap_s:
            self._anchor_s += t_s - expected
        self._n_in += len(x)
        self._pending = np.concatenate([self._pending, self._resampler.feed(x)])
        return self._take_blocks()

    def flush(self) -> list[AudioBlock]:
        """Emit what is left, the last block padded with silence (nothing if empty)."""
        if self._anchor_s is None:
            return []
        self._pending = np.concatenate([self._pending, self._resampler.flush()])
        rest = len(self._pending) % BLOCK_SAMPLES
        if rest:
            self._pending = np.concatenate([self._pending, np.zeros(BLOCK_SAMPLES - rest, np.float32)])
        return self._take_blocks()

    def _take_blocks(self) -> list[AudioBlock]:
        n = len(self._pending) // BLOCK_SAMPLES
        blocks = []
        for i in range(n):
            pcm = self._pending[i * BLOCK_SAMPLES:(i + 1) * BLOCK_SAMPLES].copy()
            blocks.append(AudioBlock(t_s=self._anchor_s + self._n_out / SAMPLE_RATE,
                                     pcm=pcm, sample_rate=SAMPLE_RATE))
            self._n_out += BLOCK_SAMPLES
        self._pending = self._pending[n * BLOCK_SAMPLES:]
        return blocks


class AudioTimeline:
    """A ring of 16 kHz samples addressed by absolute sample index round(t_s * 16000)."""

    def __init__(self, capacity_s: float = 10.0) -> None:
        self._size = int(capacity_s * SAMPLE_RATE)
        self._data = np.zeros(self._size, np.float32)
        self._stamp = np.full(self._size, -1, np.int64)   # absolute index held in each slot

    def write(self, t_s: float, pcm: np.ndarray) -> None:
        x = np.asarray(pcm, np.float32)[-self._size:]
        start = int(round(t_s * SAMPLE_RATE))
        idx = np.arange(start, start + len(x), dtype=np.int64)
        self._data[idx % self._size] = x
        self._stamp[idx % self._size] = idx

    def read(self, t_s: float, n: int) -> np.ndarray:
        start = int(round(t_s * SAMPLE_RATE))
        idx = np.arange(start, start + int(n), dtype=np.int64)
        slots = idx % self._size
        return np.where(self._stamp[slots] == idx, self._data[slots], 0.0).astype(np.float32)


class ClipMonitor:
    """Notices sustained clipping; ``check`` returns a warning line at most every ``every_s``."""

    def __init__(self, every_s: float = 10.0, level: float = 0.999, min_fraction: float = 0.01) -> None:
        self.every_s, self.level, self.min_fraction = every_s, level, min_fraction
        self._last_warned_s: float | None = None

    def check(self, pcm: np.ndarray, t_s: float) -> str | None:
        if len(pcm) == 0:
            return None
        fraction = float(np.mean(np.abs(pcm) >= self.level))
        if fraction < self.min_fraction:
            return None
        if self._last_warned_s is not None and t_s - self._last_warned_s < self.every_s:
            return None
        self._last_warned_s = t_s
        return f"input is clipping ({fraction:.0%} of samples at full scale): lower the microphone gain"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as (mono float32, sample rate); ``AudioInputError`` if unusable."""
    import soundfile as sf
    p = Path(path)
    if not p.is_file():
        raise AudioInputError(f"{p}: no such file")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioInputError(f"{p}: not a readable audio file ({str(e).splitlines()[0]})") from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{p}: contains no audio samples")
    return to_mono_float32(data), int(rate)


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 as 16-bit PCM WAV."""
    import soundfile as sf
    sf.write(str(path), np.clip(np.asarray(pcm, np.float32), -1.0, 1.0), int(sample_rate), subtype="PCM_16")
