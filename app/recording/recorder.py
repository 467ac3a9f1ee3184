"""The session recorder: a tap on the event bus that writes a reviewable, replayable record.

Contract: ``Recorder.open(root, session_id, meta, clock, on_error, *, max_gb=None,
lossless=True, queue_size=4096, retention_every_s=30.0) -> Recorder`` creates ``root/<YYYYmmdd-HHMMSS>-<id>/``
(after applying retention) and starts one writer thread. ``handle(event)`` takes every
``app.events`` object of the session from any thread and never blocks: it only enqueues
(bounded). ``close()`` drains, finalises ``meta.json`` and returns; ``path`` is the folder.

Files (app/recording/media.py writes the media):
* ``video.mp4``: the frames the model saw (VideoChunk frames), each at its stream time.
  Frame i of a chunk of n frames is stamped ``start_s + (i + 1) * (t_s - start_s) / n``
  (the last frame is the chunk's present moment). Lossless H.264 RGB unless ``lossless=False``.
* ``mic.wav``: AudioBlocks at ``t_s * 16000`` (jitter under one block is absorbed, gaps
  become silence), float32 16 kHz. ``assistant.wav``: SpeechAudio played back to back from
  ``max(t_s, end of previous)`` at the first voice's sample rate; a BargeIn silences that
  reply from the barge-in time on and drops its later audio, like a speaker flush.
* ``events.jsonl``: ``app.events.to_record`` lines (not mic blocks or raw camera frames),
  sorted by ``t``: lines wait ``REORDER_S`` of stream time so late-stamped events (VAD,
  ASR) fall in place; one later still is written with ``t`` clamped to the previous line
  and its own time in ``t_event``. Chunk lines add ``frame_pts`` (ms), audio lines add
  ``play_s`` (where the sentence sits in assistant.wav). Text fields are sanitised
  (``speech.text.sanitize_text``: no control characters, no U+FFFD).
* ``meta.json``: id, wall start time, the caller's ``meta``; at close also duration and
  counts, ``complete: true``.
Everything is flushed at least every ``FLUSH_S`` of real time: a kill loses about a second.

Failures never reach the caller: queue overflow drops events and reports them in an
ErrorEvent (at most one every ``DROP_REPORT_EVERY_S``, the rest at close); a disk error (ENOSPC...) or the size cap stops the recording with one
ErrorEvent. ``on_error`` is called from the writer thread. Retention: ``max_gb`` caps the
whole root (oldest recordings deleted first, never this one nor one being written),
checked at open and every ``retention_every_s`` (default ``RETENTION_EVERY_S``).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import heapq
import itertools
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from app import events as ev
from app.recording import library as cat
from app.recording.media import VideoWriter, WavWriter, resample
from speech.text import sanitize_text

REORDER_S = 0.75
FLUSH_S = 0.25
RETENTION_EVERY_S = 30.0
DROP_REPORT_EVERY_S = 5.0
_STOP = object()
_NOT_LOGGED = (ev.AudioBlock, ev.VideoFrame)


class Recorder:
    """One session's recording (see the module contract)."""

    def __init__(self, path: Path, root: Path, clock: Any, on_error: Callable[[ev.ErrorEvent], None],
                 max_bytes: int | None, lossless: bool, queue_size: int, lock_fd: int,
                 retention_every_s: float = RETENTION_EVERY_S) -> None:
        self.path = path
        self._root = root
        self._clock = clock
        self._on_error = on_error
        self._max_bytes = max_bytes
        self._retention_every_s = retention_every_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock_fd = lock_fd
        self._closed = False
        self._dropped = 0                     # overflow drops (counted by handle)
        self._drop_lock = threading.Lock()    # handle() runs on many threads
        self._dropped_reported = 0
        self._last_drop_report = float("-inf")
        self._failed: str | None = None
        self._video = VideoWriter(path / "video.mp4", lossless=lossless)
        self._mic = WavWriter(path / "mic.wav", cat.MIC_RATE)
        self._voice: WavWriter | None = None  # created at the first SpeechAudio
        self._events = open(path / "events.jsonl", "w", encoding="utf-8")
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = itertools.count()
        self._last_t = float("-inf")
        self._voice_cursor = 0                 # sample where the next sentence may start
        self._spans: dict[str, list[int]] = {}  # reply_id -> [start, end) in assistant.wav
        self._cut: dict[str, int] = {}        # reply_id -> barge-in sample
        self._unknown: set[str] = set()
        self._meta: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, name=f"recorder-{path.name}", daemon=True)

    # -- public API ---------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path, session_id: str, meta: dict, clock: Any,
             on_error: Callable[[ev.ErrorEvent], None], *, max_gb: float | None = None,
             lossless: bool = True, queue_size: int = 4096,
             retention_every_s: float = RETENTION_EVERY_S) -> "Recorder":
        if not isinstance(session_id, str) or not cat.SESSION_ID_RE.fullmatch(session_id):
            raise ValueError(f"recorder: session id must match {cat.SESSION_ID_RE.pattern}, "
                             f"got {session_id!r}")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        max_bytes = int(max_gb * 1e9) if max_gb is not None else None
        if max_bytes is not None:
            cat.enforce_retention(root, max_bytes)
        wall = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(wall))
        path = root / f"{stamp}-{session_id}"
        for n in itertools.count(2):
            try:
                path.mkdir()
                break
            except FileExistsError:
                path = root / f"{stamp}-{session_id}-{n}"
        lock_fd = os.open(path / cat.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        rec = cls(path, root, clock, on_error, max_bytes, lossless, queue_size, lock_fd,
                  retention_every_s)
        rec._meta = {"id": path.name, "session_id": session_id, "format": 1,
                     "started_at": _dt.datetime.fromtimestamp(wall).isoformat(timespec="seconds"),
                     "stream_start_s": round(float(clock.now()), 3), "complete": False,
                     "video": {"fps": 2, "codec": "h264 lossless rgb" if lossless else "h264 yuv420p"},
                     "mic_rate": cat.MIC_RATE, "session": dict(meta)}
        cat.write_meta(path, rec._meta)
        rec._thread.start()
        return rec

    def handle(self, event: object) -> None:
        """Take any session event; never blocks, never raises."""
        if self._closed or self._failed is not None or isinstance(event, ev.VideoFrame):
            return  # after close/failure events are expected during shutdown; raw frames unused
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._drop_lock:
                self._dropped += 1

    def close(self, timeout_s: float = 60.0) -> None:
        """Drain what was handed in, finish every file and release the recording."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        last_flush = last_retention = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=FLUSH_S)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None and self._failed is None:
                    self._guard(self._process, item)
                self._report_overflow()
                now = time.monotonic()
                if now - last_flush >= FLUSH_S and self._failed is None:
                    last_flush = now
                    self._guard(self._flush, False)
                if now - last_retention >= self._retention_every_s and self._failed is None:
                    last_retention = now
                    self._guard(self._retention)
        finally:
            self._finish()

    def _guard(self, fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except OSError as e:  # ENOSPC, EIO, a vanished folder: stop recording, keep the session
            why = e.strerror or str(e) or type(e).__name__
            self._fail(f"recording stopped: cannot write {self.path.name} ({why})")

    def _process(self, event: object) -> None:
        if isinstance(event, ev.AudioBlock):
            self._on_mic(event)
            return
        if not hasattr(event, "type") or not hasattr(event, "t_s"):
            name = type(event).__name__
            if name not in self._unknown:
                self._unknown.add(name)
                self._report(f"recorder: not an app.events event, not recorded: {name}")
            return
        # no control characters or U+FFFD in the file, whatever the event's source
        record = {k: sanitize_text(v) if isinstance(v, str) else v for k, v in ev.to_record(event).items()}
        if isinstance(event, ev.VideoChunk):
            record["frame_pts"] = self._on_chunk(event)
        elif isinstance(event, ev.SpeechAudio):
            self._on_voice(event, record)
        elif isinstance(event, ev.BargeIn):
            self._on_barge_in(event)
        heapq.heappush(self._heap, (float(event.t_s), next(self._seq), record))

    def _on_chunk(self, chunk: ev.VideoChunk) -> list[int]:
        n = len(chunk.frames)
        span = float(chunk.t_s) - float(chunk.start_s)
        return [self._video.write(float(chunk.start_s) + (i + 1) * span / n, frame)
                for i, frame in enumerate(chunk.frames)]

    def _on_mic(self, block: ev.AudioBlock) -> None:
        pcm = resample(block.pcm, block.sample_rate, cat.MIC_RATE)
        pos = int(round(block.t_s * cat.MIC_RATE))
        n = self._mic.n_samples
        if pos < n - len(pcm):          # entirely in the past: timestamps went back
            return
        if abs(pos - n) <= len(pcm):    # device jitter: keep the track contiguous
            pos = n
        self._mic.write_at(pos, pcm)

    def _on_voice(self, audio: ev.SpeechAudio, record: dict[str, Any]) -> None:
        if self._voice is None:
            self._voice = WavWriter(self.path / "assistant.wav", audio.sample_rate)
        rate = self._voice.sample_rate
        pcm = resample(audio.pcm, audio.sample_rate, rate)
        start = max(int(round(audio.t_s * rate)), self._voice_cursor)
        cut = self._cut.get(audio.reply_id)
        if cut is not None:
            pcm = pcm[: max(0, cut - start)]
            record["dropped_after_barge_in"] = True
        record["play_s"] = round(start / rate, 3)
        record["play_end_s"] = round((start + len(pcm)) / rate, 3)
        if len(pcm) == 0:
            return
        self._voice.write_at(start, pcm)
        self._voice_cursor = start + len(pcm)
        span = self._spans.setdefault(audio.reply_id, [start, start])
        span[1] = start + len(pcm)

    def _on_barge_in(self, barge: ev.BargeIn) -> None:
        rate = self._voice.sample_rate if self._voice is not None else cat.MIC_RATE
        cut = int(round(barge.t_s * rate))
        self._cut[barge.reply_id] = cut
        span = self._spans.get(barge.reply_id)
        if span is None or self._voice is None or span[1] <= cut:
            return
        start = max(cut, span[0])
        self._voice.silence_from(start, span[1])
        if self._voice_cursor == span[1]:
            self._voice_cursor = start
        span[1] = start

    def _write_ready(self, force: bool) -> None:
        horizon = float(self._clock.now()) - REORDER_S
        while self._heap and (force or self._heap[0][0] <= horizon):
            t, _seq, record = heapq.heappop(self._heap)
            if t < self._last_t:
                record = {**record, "t": round(self._last_t, 3), "t_event": record["t"]}
            self._last_t = max(self._last_t, t)
            self._events.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def _flush(self, force: bool) -> None:
        self._write_ready(force)
        self._events.flush()
        self._mic.flush()
        if self._voice is not None:
            self._voice.flush()
        self._video.flush()

    def _retention(self) -> None:
        if self._max_bytes is None:
            return
        cat.enforce_retention(self._root, self._max_bytes, protect=self.path)
        if cat.dir_size(self.path) > self._max_bytes:
            self._fail(f"recording stopped: {self.path.name} reached the size cap "
                       f"({self._max_bytes / 1e9:g} GB)")

    def _report_overflow(self) -> None:
        """One ErrorEvent per overload episode (at most one every DROP_REPORT_EVERY_S)."""
        dropped = self._dropped
        now = time.monotonic()
        if dropped > self._dropped_reported and now - self._last_drop_report >= DROP_REPORT_EVERY_S:
            self._last_drop_report = now
            self._report(f"recorder: {dropped - self._dropped_reported} events dropped "
                         "(the disk is too slow); the recording has gaps")
            self._dropped_reported = dropped

    def _report(self, message: str) -> None:
        event = ev.ErrorEvent(float(self._clock.now()), "recorder", message)
        try:
            self._on_error(event)
        except Exception as e:  # a broken callback must not kill the writer thread
            print(f"recorder: on_error failed ({type(e).__name__}: {e}); {message}", file=sys.stderr)

    def _fail(self, message: str) -> None:
        if self._failed is not None:
            return
        self._failed = message
        self._report(message)
        for track in (self._video, self._mic, self._voice):
            if track is not None:
                track.abandon()
        try:
            self._events.close()
        except OSError:
            pass  # its unwritable tail is what was just reported

    def _finish(self) -> None:
        """Close every file (on the writer thread), write the final meta, drop the lock."""
        self._last_drop_report = float("-inf")
        self._report_overflow()  # drops since the last report
        try:
            if self._failed is None:
                self._guard(self._close_files)
        finally:
            os.close(self._lock_fd)

    def _close_files(self) -> None:
        self._flush(True)
        self._events.close()
        self._video.close()
        self._mic.close()
        if self._voice is not None:
            self._voice.close()
        else:  # a session without a voice still gets an (empty) assistant track
            WavWriter(self.path / "assistant.wav", cat.MIC_RATE).close()
        recorded = cat.read_events(self.path / "events.jsonl")
        duration = max(self._last_t, self._video.last_t_s, self._mic.n_samples / cat.MIC_RATE,
                       self._voice.n_samples / self._voice.sample_rate if self._voice else 0.0)
        self._meta.update(complete=True, counts=cat.count_events(recorded),
                          duration_s=round(duration, 3),
                          ended_at=_dt.datetime.now().isoformat(timespec="seconds"),
                          dropped_events=self._dropped, video_frames=self._video.n_frames,
                          video_resized_frames=self._video.n_resized)
        cat.write_meta(self.path, self._meta)
