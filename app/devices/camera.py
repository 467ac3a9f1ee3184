"""Cameras: a real OpenCV camera and its video-file twin.

Contract (see ``app.devices.base``): frames are ``VideoFrame``s with RGB uint8 images.
* ``OpenCVCamera(index_or_path, clock=None, on_error=None)``: an integer (or digit
  string) opens that camera; anything else must be an existing video file, played in
  real time at its frame rate and looped (a camera never ends). A reader thread grabs
  continuously and keeps only the newest frame, stamped with the clock time it was read.
  ``start`` raises ``DeviceError`` when the source cannot be opened; a camera that stops
  delivering for ``stall_s`` reports an ``ErrorEvent`` through ``on_error`` once and
  ``latest`` keeps returning its last frame.
* ``FileCamera(path, clock, loop=False)``: the deterministic twin for tests and replay.
  Frame ``i`` of the file is "captured" at ``t0 + i / fps`` (``t0`` = clock time at
  ``start``); ``latest`` decodes up to the newest frame due at the clock's now (no
  thread, so a ``ManualClock`` drives it exactly). At the end of a file it keeps
  returning the last frame (``finished`` is True) unless ``loop``.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from app.clock import Clock, MonotonicClock
from app.devices.base import DeviceError, OnError
from app.events import ErrorEvent, VideoFrame


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DeviceError("opencv is not installed: pip install opencv-python") from None
    return cv2


def _open(source: int | str):
    cv2 = _cv2()
    if isinstance(source, str):
        path = Path(source).expanduser()
        if not path.is_file():
            raise DeviceError(f"camera: no such video file: {path}")
        source = str(path)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"video file {source}"
        raise DeviceError(f"{what} cannot be opened (not connected, in use, or not a video)")
    return cap


def _rgb(frame_bgr: np.ndarray) -> np.ndarray:
    if frame_bgr.ndim == 2:
        return np.repeat(frame_bgr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame_bgr[:, :, 2::-1])


def _fps(cap, default: float = 30.0) -> float:
    fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 240.0 else default


class OpenCVCamera:
    """A webcam (or a looping video file) read by a background thread."""

    def __init__(self, index_or_path: int | str, clock: Clock | None = None, on_error: OnError | None = None,
                 stall_s: float = 3.0) -> None:
        if isinstance(index_or_path, str) and index_or_path.strip().isdigit():
            index_or_path = int(index_or_path)
        self.source = index_or_path
        self.clock = clock or MonotonicClock()
        self.on_error, self.stall_s = on_error, stall_s
        self._latest: VideoFrame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap = None

    def start(self) -> None:
        self._cap = _open(self.source)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="camera", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        cv2 = _cv2()
        is_file = isinstance(self.source, str)
        period = 1.0 / _fps(self._cap) if is_file else 0.0
        next_due = self.clock.now()
        last_ok = self.clock.now()
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if not ok and is_file:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)     # loop the file like a live feed
                ok, frame = self._cap.read()
            now = self.clock.now()
            if ok:
                self._latest = VideoFrame(t_s=now, image=_rgb(frame))
                last_ok = now
            elif now - last_ok > self.stall_s:
                if self.on_error is not None:
                    self.on_error(ErrorEvent(t_s=now, source="camera",
                                             message=f"camera {self.source} stopped delivering frames (unplugged?)"))
                return
            else:
                self._stop.wait(0.05)
            if is_file:
                next_due += period
                self.clock.sleep(next_due - self.clock.now())

    def latest(self) -> VideoFrame | None:
        return self._latest

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FileCamera:
    """A video file as a camera on the session clock (deterministic, no thread)."""

    def __init__(self, path: str | Path, clock: Clock, loop: bool = False) -> None:
        self.path, self.clock, self.loop = Path(path), clock, loop
        self.fps = 0.0
        self.finished = False
        self._lock = threading.Lock()
        self._cap = None
        self._t0 = 0.0
        self._index = -1                 # index of the frame in _frame (-1: none yet)
        self._decoded = 0                # frames decoded in the current pass
        self._pass_start = 0             # global index of the current pass's first frame
        self._raw: np.ndarray | None = None       # newest decoded frame (BGR)
        self._frame: np.ndarray | None = None     # the same as RGB, made on demand

    def start(self) -> None:
        self._cap = _open(str(self.path))
        self.fps = _fps(self._cap)
        self._t0 = self.clock.now()

    def latest(self) -> VideoFrame | None:
        with self._lock:
            if self._cap is None:
                return None
            due = int(np.floor((self.clock.now() - self._t0) * self.fps + 1e-9))
            while self._index < due and not self.finished:
                ok, frame = self._cap.read()
                if not ok:
                    if self.loop and self._decoded > 0:
                        self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
                        self._pass_start += self._decoded
                        self._decoded = 0
                        continue
                    self.finished = True
                    break
                self._decoded += 1
                self._index = self._pass_start + self._decoded - 1
                self._raw, self._frame = frame, None
            if self._raw is None:
                return None
            if self._frame is None:
                self._frame = _rgb(self._raw)
            return VideoFrame(t_s=self._t0 + self._index / self.fps, image=self._frame)

    def stop(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
