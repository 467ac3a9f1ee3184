"""Replay a video file through the AURA engine and write JSON lines.

Contract: ``python launch.py replay VIDEO --model DIR_OR_ID [--ask SECONDS:TEXT ...]
[--out FILE.jsonl] [--dump-context] [--realtime] [--record DIR]`` (launch.py parses argv and calls
``main(cfg, args)``). The video is decoded with OpenCV, sampled at 2 fps into 1-s chunks
(app/sampler.py) and stepped through one engine session, as fast as possible or paced to
the stream clock with ``--realtime``. A question ``--ask S:TEXT`` closes the chunk open at
``S`` seconds early (like the live app) and goes into that step. Between steps the
session's shadow work for the next window cut runs (``maintain``), as the live worker does
when idle, so ``step_ms`` is what a live step costs.

Output, one JSON object per line (``t`` = stream seconds, ``type``), built with
``app.events.to_record``: ``user`` (each question), ``step`` (every chunk: ``decision``,
``p_silent``, ``context_tokens``, ``step_ms``, and with ``--dump-context`` the
``context_ids`` the model saw), ``reply`` (``text``, ``reply_id``, ``proactive``,
``ttft_ms``), ``error`` (``message``). A bad or unreadable video, a bad ``--ask``, a
recordings folder that cannot be created, an ``--out`` that cannot be written or a model
that cannot load is one line on stderr and exit code 2; an engine failure mid-stream ends
the output with an ``error`` line (and one on stderr), exit code 1. ``--preset offline``
uses the app's offline model at its pixel budget (app/presets.py ``offline_engine``).
``--record DIR`` also records the run like a live session (app/recording/recorder.py: the chunks the
model saw, user/step/reply events; no microphone or voice, so those tracks are empty) into
``DIR/<time>-replay/``, for the Review tab, export and ``replay RECORDING_DIR``.
``Replayer(tap=...)`` hands every session event to ``tap``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

from app.events import ErrorEvent, ReplyEnded, StepDecision, UserText, VideoFrame, to_record
from app.sampler import FrameSampler

MAINTAIN_SLICE_S = 0.05


class ReplayError(Exception):
    """A one-line, user-facing reason the replay cannot run."""


@dataclass(frozen=True)
class Ask:
    t_s: float
    text: str


def parse_ask(spec: str) -> Ask:
    seconds, sep, text = spec.partition(":")
    try:
        t_s = float(seconds)
    except ValueError:
        t_s = -1.0
    if not sep or t_s < 0 or not text.strip():
        raise ReplayError(f"--ask: expected SECONDS:TEXT (e.g. 12.5:What is on the table?), got {spec!r}")
    return Ask(t_s, text.strip())


def read_frames(path: Path) -> Iterator[VideoFrame]:
    """RGB frames of a video file with their stream times (seconds from the start)."""
    if not path.is_file():
        raise ReplayError(f"no such video file: {path}")
    try:
        import cv2
    except ImportError:
        raise ReplayError("opencv-python is needed to read video files; run python3 launch.py "
                          "once to install it") from None
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
        ok, bgr = cap.read() if cap.isOpened() else (False, None)
        if not ok or bgr is None:
            raise ReplayError(f"cannot read video frames from {path} (not a video, or an "
                              "unsupported codec)")
        fps = fps if fps and fps > 0 else 25.0
        n = 0
        while ok and bgr is not None:
            yield VideoFrame(n / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            n += 1
            ok, bgr = cap.read()
    finally:
        cap.release()


class Replayer:
    """Steps one session over a frame stream; yields records (dicts) in stream order."""

    def __init__(self, session, dump_context: bool = False, realtime: bool = False,
                 clock=None, tap: Callable[[object], None] | None = None):
        self.session = session
        self.dump_context = dump_context
        self.realtime = realtime
        self.clock = clock
        self.tap = tap or (lambda _event: None)
        self.t_s = 0.0              # the stream time of the chunk being stepped
        self.failed: str | None = None

    def _record(self, event) -> dict:
        self.tap(event)
        return to_record(event)

    def _step(self, chunk, question: str | None) -> Iterator[dict]:
        self.t_s = chunk.t_s
        self.tap(chunk)
        for ev in self.session.step(chunk, question):
            self.tap(ev)
            if isinstance(ev, StepDecision):
                rec = to_record(ev)
                if self.dump_context:
                    rec["context_ids"] = self.session.context_ids()
                yield rec
            elif isinstance(ev, ReplyEnded):
                yield to_record(ev)

    def _idle(self, until_s: float | None) -> None:
        """Shadow work between steps: until none is left (as fast as possible), or until
        the stream clock reaches ``until_s`` (real time; then wait for it)."""
        if not self.realtime:
            while self.session.maintain(MAINTAIN_SLICE_S):
                pass
            return
        while (left := until_s - self.clock.now()) > 0:
            if not self.session.maintain(min(MAINTAIN_SLICE_S, left)):
                self.clock.sleep(until_s - self.clock.now())
                return

    def run(self, frames: Iterator[VideoFrame], asks: list[Ask]) -> Iterator[dict]:
        """The records of the whole replay; an engine failure ends it with an ``error``
        record (``self.failed`` holds its message)."""
        self.failed = None
        try:
            yield from self._run(frames, asks)
        except ReplayError:
            raise
        except Exception as e:  # the engine broke mid-stream: say where, as a record
            why = (str(e).splitlines() or [""])[0]
            self.failed = f"engine failed at {self.t_s:g} s: {type(e).__name__}: {why}"
            yield self._record(ErrorEvent(self.t_s, "engine", self.failed))

    def _run(self, frames: Iterator[VideoFrame], asks: list[Ask]) -> Iterator[dict]:
        sampler = FrameSampler()
        pending = sorted(asks, key=lambda a: a.t_s)
        last_t = 0.0
        for frame in frames:
            while pending and pending[0].t_s <= frame.t_s:
                ask = pending.pop(0)
                yield self._record(UserText(ask.t_s, ask.text, source="typed"))
                chunk = sampler.close_partial(ask.t_s)
                if chunk is None:
                    yield self._record(ErrorEvent(ask.t_s, "replay", "question before the first frame: skipped"))
                    continue
                yield from self._paced(chunk, ask.text)
            for chunk in sampler.feed(frame):
                yield from self._paced(chunk, None)
            last_t = frame.t_s
        for ask in pending:
            yield self._record(ErrorEvent(ask.t_s, "replay",
                                       f"question at {ask.t_s:g}s is after the end of the video ({last_t:.1f}s)"))

    def _paced(self, chunk, question: str | None) -> Iterator[dict]:
        if self.realtime:
            self._idle(chunk.t_s)
        yield from self._step(chunk, question)
        if not self.realtime:
            self._idle(None)


def _write(records: Iterator[dict], out: IO[str]) -> int:
    n = 0
    for rec in records:
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
        out.flush()
        n += 1
    return n


def open_recorder(cfg, root: Path, video: str):
    """The Recorder of a replay run and the tap that feeds it (its clock follows the
    stream time of the events, so events are written as the replay advances)."""
    from app.clock import ManualClock
    from app.recording.recorder import Recorder
    stream = ManualClock()
    meta = {"source": "replay", "video": str(Path(video).resolve()), "model": cfg.engine.model,
            "adapter": cfg.engine.adapter or None,
            "preset": cfg.app.preset, "seed": cfg.engine.seed, "temperature": cfg.engine.temperature,
            "settings": {"hands_free": True, "proactive": True, "voice": False}}
    try:
        rec = Recorder.open(root, "replay", meta, stream,
                            lambda e: print(f"error: {e.message}", file=sys.stderr, flush=True),
                            max_gb=cfg.app.recordings_max_gb)
    except OSError as e:
        raise ReplayError(f"--record: cannot create a recording in {root} ({e.strerror or e})") from None

    def tap(event) -> None:
        t_s = getattr(event, "t_s", None)
        if t_s is not None and t_s > stream.now():
            stream.set(float(t_s))
        rec.handle(event)
    return rec, tap


def main(cfg, video: str, asks: list[str], out: str | None, dump_context: bool,
         realtime: bool, cache_dir: Path = Path(".cache"),
         progress: Callable[[str], None] | None = None, record: str | None = None) -> int:
    """The ``replay`` command; returns the exit code."""
    say = progress or (lambda msg: print(f"[replay] {msg}", file=sys.stderr, flush=True))
    try:
        parsed = [parse_ask(a) for a in asks]
        frames = read_frames(Path(video))
        first = next(frames)          # fail on a bad video before loading the model
        sink = _open_out(out)
    except ReplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from model.vlm import AuraModel, ModelLoadError
    if cfg.app.preset == "offline":
        from dataclasses import replace
        from app.presets import offline_engine
        cfg = replace(cfg, engine=offline_engine(cfg.engine, cache_dir, say))
    try:
        model = AuraModel.load(cfg.engine, progress=say)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        _close_out(sink, out)
        return 2
    from app.clock import MonotonicClock
    recorder, tap = None, None
    if record:
        try:
            recorder, tap = open_recorder(cfg, Path(record), video)
        except ReplayError as e:
            print(f"error: {e}", file=sys.stderr)
            _close_out(sink, out)
            return 2
    session = model.new_session("replay")
    replayer = Replayer(session, dump_context, realtime, MonotonicClock(), tap=tap)
    t0 = time.perf_counter()
    try:
        records = replayer.run(_chain(first, frames), parsed)
        n = _write(records, sink)
    except ReplayError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        session.close()
        _close_out(sink, out)
        if recorder is not None:
            recorder.close()
            say(f"recorded to {recorder.path}")
    say(f"{n} lines in {time.perf_counter() - t0:.1f} s")
    if replayer.failed:
        print(f"error: {replayer.failed}", file=sys.stderr)
        return 1
    return 0


def _open_out(out: str | None) -> IO[str]:
    if not out:
        return sys.stdout
    try:
        return open(out, "w", encoding="utf-8")
    except OSError as e:
        raise ReplayError(f"--out: cannot write {out} ({e.strerror or e})") from None


def _close_out(sink: IO[str], out: str | None) -> None:
    if out:
        sink.close()


def _chain(first: VideoFrame, rest: Iterator[VideoFrame]) -> Iterator[VideoFrame]:
    yield first
    yield from rest
