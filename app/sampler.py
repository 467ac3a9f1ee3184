"""``FrameSampler``: camera frames at any rate -> 1-second ``VideoChunk``s of 2 frames.

Contract (pure; no clock, no I/O; the caller passes stream times):
* ``feed(frame) -> list[VideoChunk]``: frames arrive in stream-time order at any rate.
  Each chunk spans ``[start_s, start_s + chunk_s]`` and samples ``fps * chunk_s`` frames
  (2 by default): the frame nearest each tick ``start_s + k / fps`` (k = 1, 2), so the
  chunk's last frame is the present moment at its end ``t_s``. A tick is resolved by the
  first frame at or after it (then the nearer of that frame and the one before wins), so a
  chunk is emitted with the first frame at or past its end. A gap in the input resolves
  the missed ticks with the frames around it (several chunks may come out at once).
* ``close_partial(t_s) -> VideoChunk | None``: closes the current chunk early at ``t_s``
  (a question arrived: answer now, not at the next full second). It holds the frames
  sampled so far and ends on the latest frame seen (not after ``t_s``), so its last frame
  is the present moment; one frame alone when that is all there is (the engine repeats
  it); the next chunk starts at ``t_s``. None before any frame was seen.
* The first chunk starts at the first frame's time (``start_s=None``, the default), so a
  camera that starts late, or a stream clock that ran before the session, never yields a
  backlog of empty seconds. ``restart()`` (reset context) forgets the frames seen and
  starts again at the next frame's time; chunk ``index`` keeps counting from where it
  was, so indices stay unique within a session. ``reset(start_s)`` starts over at index 0.
"""
from __future__ import annotations

from app.events import VideoChunk, VideoFrame

EPS = 1e-9


class FrameSampler:
    def __init__(self, fps: float = 2.0, chunk_s: float = 1.0, start_s: float | None = None):
        if fps <= 0 or chunk_s <= 0:
            raise ValueError("FrameSampler: fps and chunk_s must be positive")
        self.fps = float(fps)
        self.chunk_s = float(chunk_s)
        self.per_chunk = max(1, round(self.fps * self.chunk_s))
        self.reset(start_s)

    def reset(self, start_s: float | None = None) -> None:
        self._index = 0
        self.restart(start_s)

    def restart(self, start_s: float | None = None) -> None:
        # None: the next frame fed sets the start (see feed)
        self._start = None if start_s is None else float(start_s)
        self._picked: list[VideoFrame] = []
        self._last: VideoFrame | None = None

    def _tick(self) -> float:
        """Stream time of the next unresolved tick of the current chunk."""
        k = len(self._picked) + 1
        if k == self.per_chunk:
            return self._start + self.chunk_s
        return self._start + k / self.fps

    def _emit(self, end_s: float) -> VideoChunk:
        chunk = VideoChunk(t_s=end_s, start_s=self._start,
                           frames=tuple(f.image for f in self._picked), index=self._index)
        self._index += 1
        self._start = end_s
        self._picked = []
        return chunk

    def feed(self, frame: VideoFrame) -> list[VideoChunk]:
        if self._last is not None and frame.t_s < self._last.t_s - EPS:
            raise ValueError(f"FrameSampler: frame at {frame.t_s:.3f}s is older than the last "
                             f"one ({self._last.t_s:.3f}s)")
        if self._start is None:
            self._start = float(frame.t_s)
        out: list[VideoChunk] = []
        while frame.t_s >= self._tick() - EPS:
            tick = self._tick()
            before = self._last
            nearer = before if before is not None and tick - before.t_s < frame.t_s - tick else frame
            self._picked.append(nearer)
            if len(self._picked) == self.per_chunk:
                out.append(self._emit(tick))
        self._last = frame
        return out

    def close_partial(self, t_s: float) -> VideoChunk | None:
        if self._last is None:
            return None
        last = self._last
        newer = not self._picked or (last.t_s > self._picked[-1].t_s + EPS and last.t_s <= t_s + EPS)
        if newer and len(self._picked) < self.per_chunk:
            self._picked.append(last)        # end on the present moment, never repeat an older frame
        return self._emit(max(float(t_s), self._start))
