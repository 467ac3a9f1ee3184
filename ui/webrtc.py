"""The browser transport: one FastRTC connection = one live session.

Contract: ``BrowserIO`` is a session's ``SessionIO`` over WebRTC: ``on_video(bgr)`` keeps
the newest camera frame, ``on_audio(rate, pcm)`` re-blocks the microphone to 16 kHz
512-sample blocks and posts them to the session, ``play``/``flush``/``playing`` queue the
assistant's voice in 20 ms frames and pace them a little ahead of real time so a barge-in
flush is heard within ~``LEAD_S``. ``AuraStreamHandler`` is the FastRTC audio-video handler
(one copy per connection): it opens a session through the ``SessionManager`` when the
connection starts (or waits in the manager's line, in arrival order, and opens it as soon as
a place frees), feeds it, emits the voice, echoes the camera back for display and closes
the session when the connection ends or ``disconnect()`` says its page is gone. The
browser's own echo cancellation is on (FastRTC's default track constraints).
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from app.clock import Clock
from app.events import SpeechAudio, VideoFrame

OUT_RATE = 24_000
FRAME_S = 0.02
LEAD_S = 0.12
PLACEHOLDER = np.full((480, 640, 3), 24, np.uint8)


class BrowserIO:
    def __init__(self, clock: Clock, reblocker: Any, resample: Any) -> None:
        self.clock = clock
        self._reblocker = reblocker
        self._resample = resample
        self._lock = threading.Lock()
        self._frame: VideoFrame | None = None
        self._out: deque = deque()          # (reply_id, float32 frame of 20 ms)
        self._play_until = 0.0              # wall time until which handed-out audio plays
        self._last_reply: str | None = None
        self._flushed = False
        self.session: Any = None

    # -- camera and microphone (FastRTC threads) -----------------------------------------
    def on_video(self, bgr: np.ndarray) -> None:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        with self._lock:
            self._frame = VideoFrame(self.clock.now(), rgb)

    def on_audio(self, sample_rate: int, pcm: np.ndarray) -> None:
        session = self.session
        if session is None:
            return
        for block in self._reblocker(sample_rate).feed(pcm, self.clock.now()):
            session.post_audio(block)

    def latest_frame(self) -> VideoFrame | None:
        with self._lock:
            return self._frame

    # -- speaker ------------------------------------------------------------------------
    def play(self, audio: SpeechAudio) -> None:
        pcm = np.asarray(audio.pcm, dtype=np.float32).reshape(-1)
        if audio.sample_rate != OUT_RATE:
            pcm = self._resample(pcm, audio.sample_rate, OUT_RATE)
        step = int(OUT_RATE * FRAME_S)
        frames = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        with self._lock:
            self._out.extend((audio.reply_id, f) for f in frames if len(f))

    def flush(self, reply_id: str | None = None) -> None:
        with self._lock:
            self._out = deque(item for item in self._out if reply_id is not None and item[0] != reply_id)
            if reply_id is None or self._last_reply == reply_id:
                self._play_until = time.monotonic()
                self._last_reply = None
            self._flushed = True

    def playing(self) -> str | None:
        with self._lock:
            if self._last_reply is not None and time.monotonic() < self._play_until:
                return self._last_reply
            return self._out[0][0] if self._out else None

    def next_audio(self) -> tuple[str, np.ndarray] | None:
        """The next 20 ms frame if it is due (keeps at most LEAD_S queued ahead)."""
        with self._lock:
            now = time.monotonic()
            if not self._out or self._play_until - now > LEAD_S:
                return None
            reply_id, frame = self._out.popleft()
            self._play_until = max(self._play_until, now) + len(frame) / OUT_RATE
            self._last_reply = reply_id
            return reply_id, frame

    def take_flush(self) -> bool:
        """True once after a flush (the handler then drops FastRTC's own queue)."""
        with self._lock:
            flushed, self._flushed = self._flushed, False
            return flushed


def make_handler(manager: Any, clock_factory: Any, reblocker: Any, resample: Any) -> Any:
    """Build the FastRTC handler class bound to this app's session manager."""
    from fastrtc import AudioVideoStreamHandler

    class AuraStreamHandler(AudioVideoStreamHandler):
        def __init__(self) -> None:
            super().__init__(expected_layout="mono", output_sample_rate=OUT_RATE,
                             input_sample_rate=16_000, fps=15)
            self.io = BrowserIO(clock_factory(), reblocker, resample)
            self.session_id: str | None = None
            self.ticket = secrets.token_hex(8)      # this connection's place in the line
            self.gone = False
            self.opened_s = time.monotonic()        # the offer (ui/presence.py reads these two)
            self.heard_s: float | None = None       # the last microphone frame
            self._open_lock = threading.Lock()

        def copy(self) -> "AuraStreamHandler":
            return AuraStreamHandler()

        def _ensure_session(self) -> None:
            # called for every frame: while the visitor waits, each call asks again
            if self.io.session is not None or self.gone:
                return
            with self._open_lock:
                if self.io.session is None and not self.gone:
                    session = manager.open(self.io, ticket=self.ticket)
                    if session is not None:
                        self.session_id = session.session_id
                        self.io.session = session

        def place_in_line(self) -> int | None:
            """1 = next to join; None when not waiting."""
            return None if self.io.session is not None else manager.position(self.ticket)

        def disconnect(self) -> None:
            """The page is gone: free the place or the spot in line now."""
            with self._open_lock:
                self.gone = True
                session_id, self.session_id = self.session_id, None
                self.io.session = None
            manager.leave(self.ticket)
            if session_id is not None:      # (closing joins the session's thread: not under the lock)
                manager.close(session_id)

        def receive(self, frame: tuple[int, np.ndarray]) -> None:
            self.heard_s = time.monotonic()
            self._ensure_session()
            rate, pcm = frame
            self.io.on_audio(rate, pcm)

        def video_receive(self, frame: np.ndarray) -> None:
            # (FastRTC calls this on its event loop: the session is opened from receive())
            self.io.on_video(frame)

        def video_emit(self) -> np.ndarray:
            """The camera echoed back for display (a dark frame until the first arrives:
            FastRTC's video track cannot send "nothing")."""
            latest = self.io.latest_frame()
            if latest is None:
                return PLACEHOLDER
            return np.ascontiguousarray(latest.image[:, :, ::-1])

        def emit(self):
            if self.io.take_flush() and self._clear_queue is not None:
                self.clear_queue()
            item = self.io.next_audio()
            if item is None:
                time.sleep(FRAME_S / 2)
                return None
            return OUT_RATE, item[1].reshape(1, -1)

        def shutdown(self) -> None:
            self.disconnect()

    return AuraStreamHandler
