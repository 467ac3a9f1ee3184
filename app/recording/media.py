"""Media files of a recording: crash-safe writers and lenient readers.

Contract:
* ``WavWriter(path, sample_rate)``: mono float32 WAV (bit-exact copy of the pcm it gets).
  ``write_at(sample, pcm)`` places audio anywhere (gaps become silence, earlier audio is
  overwritten), ``flush()`` patches the RIFF sizes and hands the bytes to the kernel, so a
  killed process leaves a valid file that ends at the last flush.
* ``VideoWriter(path, lossless)``: H.264 in fragmented MP4 (``empty_moov`` + a fragment per
  frame, keyframe every 2 frames), each frame at its own stream time (ms time base; the
  frame shows from its time until the next one). Lossless RGB by default, so a replay sees
  bit-identical pixels; ``lossless=False`` writes compact yuv420p. MP4 fragments start at
  time 0, so when the first frame is later a black lead-in frame is put at 0. Each frame is
  flushed to the kernel after it is muxed: a kill loses at most the frame being written.
* Readers tolerate a recording cut by a kill: ``read_wav``, ``iter_video_frames`` (stops at
  a torn last fragment), ``read_chunks`` (the exact VideoChunks the model saw, from
  ``events.jsonl`` chunk records + the video) and ``mic_blocks`` (AudioBlocks of 512).

PyAV (``av``, installed with faster-whisper) is imported lazily; soundfile for reading.
"""
from __future__ import annotations

import io
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from app.events import AudioBlock, VideoChunk

PTS_RATE = 1000            # video time base: milliseconds
GOP_FRAMES = 2             # a keyframe every second at 2 fps
_HEADER = 44


def _import_av():
    try:
        import av
    except ImportError:
        raise RuntimeError("recording video needs PyAV: pip install av (it comes with "
                           "faster-whisper; see requirements.txt)") from None
    return av


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear-interpolation resampling (only used when a track gets a foreign rate)."""
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if rate_in == rate_out or len(pcm) == 0:
        return pcm
    n_out = int(round(len(pcm) * rate_out / rate_in))
    x_out = np.arange(n_out, dtype=np.float64) * (rate_in / rate_out)
    return np.interp(x_out, np.arange(len(pcm)), pcm).astype(np.float32)


class WavWriter:
    """Incremental mono float32 WAV with random-access placement."""

    def __init__(self, path: Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.n_samples = 0
        self._f: io.BufferedRandom | None = open(self.path, "w+b")
        self._f.write(self._header())

    def _header(self) -> bytes:
        data = self.n_samples * 4
        return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
                + b"fmt " + struct.pack("<IHHIIHH", 16, 3, 1, self.sample_rate,
                                        self.sample_rate * 4, 4, 32)
                + b"data" + struct.pack("<I", data))

    def write_at(self, pos: int, pcm: np.ndarray) -> None:
        f = self._require_open()
        pcm = np.ascontiguousarray(pcm, dtype="<f4").reshape(-1)
        pos = max(0, int(pos))
        if pos > self.n_samples:  # a gap: silence, written in bounded pieces
            f.seek(_HEADER + self.n_samples * 4)
            gap = pos - self.n_samples
            zeros = bytes(4 * min(gap, 1 << 16))
            while gap > 0:
                n = min(gap, len(zeros) // 4)
                f.write(zeros[: 4 * n])
                gap -= n
        else:
            f.seek(_HEADER + pos * 4)
        f.write(pcm.tobytes())
        self.n_samples = max(self.n_samples, pos + len(pcm))

    def silence_from(self, pos: int, end: int) -> None:
        """Silence [pos, end); when that is the track's tail, the track ends at ``pos``."""
        pos = max(0, int(pos))
        if end >= self.n_samples:
            f = self._require_open()
            f.flush()
            self.n_samples = min(self.n_samples, pos)
            f.truncate(_HEADER + self.n_samples * 4)
        elif end > pos:
            self.write_at(pos, np.zeros(end - pos, np.float32))

    def append(self, pcm: np.ndarray) -> None:
        self.write_at(self.n_samples, pcm)

    def flush(self) -> None:
        f = self._require_open()
        f.seek(0)
        f.write(self._header())
        f.seek(0, os.SEEK_END)
        f.flush()

    def close(self) -> None:
        if self._f is not None:
            try:
                self.flush()
            finally:
                self._f.close()
                self._f = None

    def abandon(self) -> None:
        """Close without writing (after a disk error); the file keeps its last flush."""
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError:
                pass  # the buffered tail cannot be written: that is the error already reported

    def _require_open(self) -> io.BufferedRandom:
        if self._f is None:
            raise ValueError(f"{self.path.name} is closed")
        return self._f


class VideoWriter:
    """Frames at their stream times into a fragmented MP4 (see the module contract)."""

    def __init__(self, path: Path, lossless: bool = True) -> None:
        _import_av()  # fail at open, not at the first chunk
        self.path = Path(path)
        self.lossless = lossless
        self.size: tuple[int, int] | None = None   # (height, width) of the first frame
        self.n_frames = 0
        self.n_resized = 0
        self.last_t_s = 0.0                         # time of the newest frame
        self._last_pts = -1
        self._file: io.BufferedWriter | None = None
        self._container: Any = None
        self._stream: Any = None

    def _open(self, height: int, width: int) -> None:
        av = _import_av()
        self._file = open(self.path, "wb", buffering=8 << 20)
        self._container = av.open(self._file, "w", format="mp4", options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof+frag_every_frame"})
        if self.lossless:
            codec, pix, opts = "libx264rgb", "rgb24", {"qp": "0"}
        else:
            codec, pix, opts = "libx264", "yuv420p", {"crf": "20"}
            height, width = height - height % 2, width - width % 2
        stream = self._container.add_stream(codec, options={
            "preset": "ultrafast", "tune": "zerolatency", "g": str(GOP_FRAMES), **opts})
        stream.width, stream.height, stream.pix_fmt = width, height, pix
        stream.codec_context.time_base = Fraction(1, PTS_RATE)
        stream.time_base = Fraction(1, PTS_RATE)
        self._stream = stream
        self.size = (height, width)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        assert self.size is not None
        h, w = self.size
        if image.shape[:2] == (h, w):
            return image
        if not self.lossless and image.shape[0] - image.shape[0] % 2 == h \
                and image.shape[1] - image.shape[1] % 2 == w:
            return image[:h, :w]
        self.n_resized += 1  # the camera changed size mid-session: nearest neighbour
        rows = (np.arange(h) * image.shape[0] // h).clip(0, image.shape[0] - 1)
        cols = (np.arange(w) * image.shape[1] // w).clip(0, image.shape[1] - 1)
        return image[rows][:, cols]

    def write(self, t_s: float, image: np.ndarray) -> int:
        """Add a frame shown from stream time ``t_s``; returns its pts in ms."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"video frame must be RGB uint8 HxWx3, got {image.shape} {image.dtype}")
        if self._container is None:
            self._open(*image.shape[:2])
        pts = max(int(round(t_s * PTS_RATE)), self._last_pts + 1)
        if self._last_pts < 0 and pts > 0:
            assert self.size is not None
            self._encode(np.zeros((*self.size, 3), np.uint8), 0)
        self._encode(np.ascontiguousarray(self._fit(image)), pts)
        self.n_frames += 1
        return pts

    def _encode(self, image: np.ndarray, pts: int) -> None:
        av = _import_av()
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, PTS_RATE)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        assert self._file is not None
        self._file.flush()
        self._last_pts = pts
        self.last_t_s = pts / PTS_RATE

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        finally:
            self._container = None
            if self._file is not None:
                self._file.close()
                self._file = None

    def abandon(self) -> None:
        """Drop the encoder after a disk error; what was flushed stays readable."""
        self._container = None
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.close()
            except OSError:
                pass  # its unwritable tail is the error already reported


# --- readers -------------------------------------------------------------------------------
def read_wav(path: Path, default_rate: int = 16000) -> tuple[np.ndarray, int]:
    """(mono float32 pcm, sample rate); a missing file is empty audio."""
    if not Path(path).is_file():
        return np.zeros(0, np.float32), default_rate
    import soundfile as sf
    pcm, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return pcm[:, 0].copy(), int(rate)


def iter_video_frames(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(time in s, RGB frame) for every frame, stopping quietly at a torn last fragment."""
    if not Path(path).is_file() or Path(path).stat().st_size == 0:
        return
    av = _import_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    yield float(frame.pts * frame.time_base), frame.to_ndarray(format="rgb24")
        except (av.error.InvalidDataError, av.error.EOFError):
            return  # the fragment a kill cut short; everything before it was yielded


def frame_at(frames: list[tuple[float, np.ndarray]], t_s: float) -> tuple[float, np.ndarray]:
    """The frame on screen at ``t_s`` (the last one with time <= t_s)."""
    times = [t for t, _ in frames]
    i = int(np.searchsorted(times, t_s + 1e-6, side="right")) - 1
    return frames[max(i, 0)]


def read_chunks(rec_dir: Path, events: list[dict[str, Any]]) -> Iterator[VideoChunk]:
    """The VideoChunks the model saw, rebuilt exactly from chunk records and the video."""
    by_pts: dict[int, np.ndarray] = {}
    for t, image in iter_video_frames(Path(rec_dir) / "video.mp4"):
        by_pts[int(round(t * PTS_RATE))] = image
    for rec in events:
        if rec.get("type") != "chunk" or not rec.get("frame_pts"):
            continue
        frames = [by_pts.get(int(p)) for p in rec["frame_pts"]]
        if any(f is None for f in frames):
            return  # the video was cut (a kill) before this chunk
        yield VideoChunk(t_s=float(rec["t"]), start_s=float(rec["start_s"]),
                         frames=tuple(frames), index=int(rec.get("index", 0)))


def mic_blocks(rec_dir: Path, block: int = 512) -> Iterator[AudioBlock]:
    """The microphone track as AudioBlocks (t_s = block start), like a live microphone."""
    pcm, rate = read_wav(Path(rec_dir) / "mic.wav")
    for start in range(0, len(pcm) - block + 1, block):
        yield AudioBlock(t_s=start / rate, pcm=pcm[start:start + block], sample_rate=rate)
