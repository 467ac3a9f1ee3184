"""Annotations: what a tester says the assistant should have done at a moment of a recording.

Contract:
* Three kinds (``KINDS``): ``say`` "should have said: TEXT", ``silent`` "should have stayed
  silent", ``better`` "better answer: TEXT".
* Each note names its chunk (the recorded model step it corrects, see ``chunk_for``) and
  keeps a stable number ``n`` (numbers are never reused, so a deletion renumbers nothing).
* ``load / add / edit / delete`` work on ``annotations.jsonl`` inside the recording. Every
  change rewrites the whole file atomically (temp file, fsync, rename, folder fsync) under
  an flock: a crash mid-write leaves the old file or the new one, never a torn one.
* Text is stored cleaned (no control characters, no U+FFFD, single spaces, at most
  ``MAX_TEXT`` characters) but not escaped: every viewer escapes it.
* Bad input raises ``AnnotationError`` (a ValueError) with one line.
Standard library only.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from app.recording import library as cat

FILE = "annotations.jsonl"
LOCK = ".annotations.lock"
KINDS = {"say": "should have said", "silent": "should have stayed silent", "better": "better answer"}
MAX_TEXT = 2000


class AnnotationError(ValueError):
    pass


@dataclass(frozen=True)
class Annotation:
    n: int              # stable number (1, 2, ...), what --delete N and the tab refer to
    t: float            # stream time the tester marked, seconds
    chunk: int          # chunk_index of the step this note corrects
    chunk_start_s: float
    chunk_end_s: float
    kind: str           # a key of KINDS
    text: str           # "" for "silent"
    created: str        # UTC time of the last change, ISO 8601

    def label(self) -> str:
        return f"{KINDS[self.kind]}: {self.text}" if self.text else KINDS[self.kind]


def clean_text(text: Any) -> str:
    """One line of printable text: control/format characters and U+FFFD dropped."""
    s = "".join(ch if not unicodedata.category(ch).startswith("C") else " "
                for ch in str(text or "") if ch != "\ufffd")
    return " ".join(s.split())


def _chunks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((e for e in events if e.get("type") == "chunk" and isinstance(e.get("index"), int)),
                  key=lambda e: float(e["t"]))


def step_of(events: list[dict[str, Any]], chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The step that decided on this chunk record (the first at or after its end with its
    index: indexes can repeat in a recording, times cannot)."""
    return next((e for e in events if e.get("type") == "step" and e.get("chunk_index") == chunk["index"]
                 and float(e["t"]) >= float(chunk["t"]) - 1e-6), None)


def chunk_for(events: list[dict[str, Any]], t_s: float, kind: str) -> dict[str, Any]:
    """The chunk record a note at ``t_s`` corrects.

    ``say``: the chunk whose span holds ``t_s`` (start < t <= end; before the first chunk,
    the first; after the last, the last): the first step that could have reacted to what is
    on screen at ``t_s``. ``silent`` / ``better`` correct something said: the chunk whose
    step spoke at or before ``t_s`` (the reply the tester is hearing), the latest one.
    """
    chunks = _chunks(events)
    if not chunks:
        raise AnnotationError("the recording holds no video chunks, so there is no model step to annotate")
    holding = next((c for c in chunks if t_s <= float(c["t"]) + 1e-6), chunks[-1])
    if kind == "say":
        return holding
    steps = {id(c): step_of(events, c) for c in chunks}
    spoke = [c for c in chunks if (steps[id(c)] or {}).get("decision") == "speak"
             and (c is holding or float(steps[id(c)]["t"]) <= t_s + 1e-6)]
    if not spoke:
        raise AnnotationError(f"nothing was said at or before {t_s:.2f} s: use 'should have said' there")
    return spoke[-1]


def did(events: list[dict[str, Any]], chunk: dict[str, Any]) -> dict[str, Any]:
    """What the model did at a chunk record: decision, p_silent and the reply it spoke (the
    reply started by that step, else the first reply before the next step; None if silent)."""
    step = step_of(events, chunk)
    if step is None:
        return {"decision": None, "p_silent": None, "reply": None}
    t0 = float(step["t"])
    until = min((float(e["t"]) for e in events if e.get("type") == "step" and float(e["t"]) > t0),
                default=math.inf)
    reply = None
    if step.get("decision") == "speak":
        started = {e.get("reply_id") for e in events if e.get("type") == "reply_start"
                   and t0 - 1e-6 <= float(e["t"]) < until}
        replies = [e for e in events if e.get("type") == "reply"]
        found = next((e for e in replies if e.get("reply_id") in started), None) or \
            next((e for e in replies if t0 - 1e-6 <= float(e["t"]) < until), None)
        reply = None if found is None else str(found.get("text", ""))
    return {"decision": step.get("decision"), "p_silent": step.get("p_silent"), "reply": reply}


def moment(events: list[dict[str, Any]], chunk_index: int) -> dict[str, Any]:
    """``did`` at the first chunk record with this index (a replay's events, which hold no
    chunk records: at the first step with this index)."""
    chunk = next((c for c in _chunks(events) if c["index"] == chunk_index), None)
    return did(events, chunk or {"index": chunk_index, "t": -math.inf})


def _validate(kind: Any, text: Any) -> tuple[str, str]:
    if kind not in KINDS:
        raise AnnotationError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    text = clean_text(text)
    if kind == "silent":
        return kind, ""
    if not text:
        raise AnnotationError(f"'{KINDS[kind]}' needs the text the assistant should have said")
    if len(text) > MAX_TEXT:
        raise AnnotationError(f"the text is {len(text)} characters; at most {MAX_TEXT}")
    return kind, text


def _time(t_s: Any, duration_s: float) -> float:
    try:
        t = float(t_s)
    except (TypeError, ValueError):
        raise AnnotationError(f"the time must be a number of seconds, not {t_s!r}") from None
    if not math.isfinite(t) or t < 0 or t > duration_s + 0.5:
        raise AnnotationError(f"the time {t_s} s is outside the recording (0 to {duration_s:.1f} s)")
    return round(t, 3)


def check_dir(rec_dir: Path) -> Path:
    rec_dir = Path(rec_dir)
    if rec_dir.is_symlink() or not (rec_dir / "events.jsonl").is_file():
        raise AnnotationError(f"{rec_dir}: not a recording folder (no events.jsonl)")
    return rec_dir


def load(rec_dir: Path) -> list[Annotation]:
    """The notes, by time. Lines that do not parse as a note are skipped."""
    try:
        text = (Path(rec_dir) / FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
            note = Annotation(int(d["n"]), float(d["t"]), int(d["chunk"]), float(d["chunk_start_s"]),
                              float(d["chunk_end_s"]), str(d["kind"]), clean_text(d.get("text", "")),
                              str(d.get("created", "")))
        except (ValueError, KeyError, TypeError):
            continue
        if note.kind in KINDS:
            out.append(note)
    return sorted(out, key=lambda a: (a.t, a.n))


@contextmanager
def _locked(rec_dir: Path) -> Iterator[None]:
    with open(rec_dir / LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(rec_dir: Path, notes: list[Annotation]) -> None:
    """Replace the file atomically: readers and a crash see the old or the new version."""
    for stale in rec_dir.glob(FILE + ".tmp-*"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    tmp = rec_dir / f"{FILE}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for a in sorted(notes, key=lambda a: (a.t, a.n)):
            f.write(to_line(a))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, rec_dir / FILE)
    fd = os.open(rec_dir, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def _make(rec_dir: Path, n: int, t_s: Any, kind: Any, text: Any) -> Annotation:
    kind, text = _validate(kind, text)
    events = cat.read_events(rec_dir / "events.jsonl")
    t = _time(t_s, cat.recording_duration_s(rec_dir, events))
    chunk = chunk_for(events, t, kind)
    return Annotation(n, t, int(chunk["index"]), float(chunk.get("start_s", 0.0)), float(chunk["t"]),
                      kind, text, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def add(rec_dir: Path, t_s: Any, kind: Any, text: Any = "") -> Annotation:
    rec_dir = check_dir(rec_dir)
    with _locked(rec_dir):
        notes = load(rec_dir)
        note = _make(rec_dir, max((a.n for a in notes), default=0) + 1, t_s, kind, text)
        _write(rec_dir, [*notes, note])
    return note


def _find(notes: list[Annotation], n: Any) -> Annotation:
    try:
        return next(a for a in notes if a.n == int(n))
    except (StopIteration, TypeError, ValueError):
        have = ", ".join(str(a.n) for a in notes) or "none"
        raise AnnotationError(f"no note number {n} (notes: {have})") from None


def edit(rec_dir: Path, n: Any, t_s: Any = None, kind: Any = None, text: Any = None) -> Annotation:
    """Change a note's time, kind or text (None keeps it); its number stays."""
    rec_dir = check_dir(rec_dir)
    with _locked(rec_dir):
        notes = load(rec_dir)
        old = _find(notes, n)
        note = _make(rec_dir, old.n, old.t if t_s is None else t_s, old.kind if kind is None else kind,
                     old.text if text is None else text)
        _write(rec_dir, [note if a.n == old.n else a for a in notes])
    return note


def delete(rec_dir: Path, n: Any) -> Annotation:
    rec_dir = check_dir(rec_dir)
    with _locked(rec_dir):
        notes = load(rec_dir)
        gone = _find(notes, n)
        _write(rec_dir, [a for a in notes if a.n != gone.n])
    return gone


def format_line(a: Annotation) -> str:
    """The one-line form ``--list`` prints and the export's summary uses."""
    return f"#{a.n}  {a.t:7.2f} s  chunk {a.chunk} ({a.chunk_start_s:.2f}-{a.chunk_end_s:.2f} s)  {a.label()}"


def to_line(a: Annotation) -> str:
    """The note's annotations.jsonl line (with its newline)."""
    return json.dumps(asdict(a), ensure_ascii=False) + "\n"


def markdown(notes: list[Annotation]) -> str:
    """A "## Annotations" section for summary.md ("" when there are none)."""
    return "\n## Annotations\n\n" + "".join(f"- {format_line(a)}\n" for a in notes) if notes else ""
