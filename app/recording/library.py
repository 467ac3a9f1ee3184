"""The recordings catalogue: ids, safe id -> path resolution, listing, deletion, retention.

Contract:
* A recording lives in ``root/<YYYYmmdd-HHMMSS>-<session id>/`` (``RECORDING_ID_RE``) and
  holds ``video.mp4``, ``mic.wav``, ``assistant.wav``, ``events.jsonl``, ``meta.json``.
* ``resolve(root, rec_id)`` is the ONLY way from an id (user input) to a path: the id must
  match the regex, the directory must exist, must not be a symlink, and must resolve to a
  direct child of the resolved root. ``recording_file(root, rec_id, name)`` adds a file from
  the fixed allow-list. Both raise ``RecordingError`` (one line) otherwise.
* ``list_recordings(root)`` returns ``RecordingInfo`` rows (newest first): date, length,
  counts of questions / replies, size, whether it is still being written.
* ``delete(root, rec_id)`` removes a recording unless it is being written.
* ``enforce_retention(root, max_bytes, protect)`` deletes the oldest recordings until the
  total size fits, never ``protect`` and never one being written (its lock is held).
* ``read_events(path)`` reads ``events.jsonl`` leniently: a line cut by a crash is skipped.

A recording is "being written" while its writer holds ``flock`` on ``.lock`` inside it; the
kernel drops the lock when the writer dies, so a crashed recording is never stuck "live".
Standard library only.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

RECORDING_ID_RE = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9_-]{1,64}$")
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FILES = ("video.mp4", "mic.wav", "assistant.wav", "events.jsonl", "meta.json")
LOCK_NAME = ".lock"
MIC_RATE = 16000


class RecordingError(ValueError):
    """A recording id or path was refused (message is one line, safe to show)."""


@dataclass(frozen=True)
class RecordingInfo:
    id: str
    started: str             # "YYYY-mm-dd HH:MM:SS" (local time, from the id)
    duration_s: float
    n_questions: int
    n_replies: int
    n_proactive: int
    size_bytes: int
    live: bool               # still being written
    complete: bool           # closed cleanly (False after a crash or while live)


def check_id(rec_id: object) -> str:
    if not isinstance(rec_id, str) or not RECORDING_ID_RE.fullmatch(rec_id):
        raise RecordingError("not a recording id (expected YYYYmmdd-HHMMSS-<session>)")
    return rec_id


def resolve(root: Path, rec_id: object) -> Path:
    """The recording's directory, strictly inside ``root`` (see the module contract)."""
    name = check_id(rec_id)
    base = Path(root).resolve()
    path = base / name
    if path.is_symlink():
        raise RecordingError(f"recording {name} is a link; refused")
    if not path.is_dir():
        raise RecordingError(f"no recording {name}")
    if path.resolve().parent != base:
        raise RecordingError(f"recording {name} is outside the recordings folder; refused")
    return path


def recording_file(root: Path, rec_id: object, name: str) -> Path:
    """A file of a recording from the allow-list (``FILES``), refusing links."""
    if name not in FILES:
        raise RecordingError(f"not a recording file: {name!r}")
    path = resolve(root, rec_id) / name
    if path.is_symlink() or not path.is_file():
        raise RecordingError(f"recording {rec_id} has no {name}")
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of ``events.jsonl`` (a torn last line is skipped)."""
    events: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # only a line torn by a kill can be invalid; the rest is still good
        if isinstance(item, dict) and isinstance(item.get("t"), (int, float)):
            events.append(item)
    return events


def read_meta(rec_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((Path(rec_dir) / "meta.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(rec_dir: Path, meta: dict[str, Any]) -> None:
    """Atomic replace, so a kill never leaves a half-written meta.json."""
    tmp = Path(rec_dir) / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, Path(rec_dir) / "meta.json")


def count_events(events: list[dict[str, Any]]) -> dict[str, int]:
    """Counts a recording is summarised by (``reply`` = finished or cancelled replies)."""
    replies = [e for e in events if e.get("type") == "reply"]
    steps = [e for e in events if e.get("type") == "step"]
    return {
        "questions": sum(1 for e in events if e.get("type") == "user"),
        "replies": len(replies),
        "proactive": sum(1 for e in replies if e.get("proactive")),
        "cancelled": sum(1 for e in replies if e.get("cancelled")),
        "steps": len(steps),
        "speak": sum(1 for e in steps if e.get("decision") == "speak"),
        "barge_ins": sum(1 for e in events if e.get("type") == "barge_in"),
        "errors": sum(1 for e in events if e.get("type") == "error"),
    }


def wav_duration_s(path: Path) -> float:
    """Length of a WAV written by the recorder, from its header (0 if absent/unreadable)."""
    try:
        with open(path, "rb") as f:
            head = f.read(44)
    except FileNotFoundError:
        return 0.0
    if len(head) < 44 or head[:4] != b"RIFF" or head[36:40] != b"data":
        return 0.0
    rate = int.from_bytes(head[24:28], "little")
    block = int.from_bytes(head[32:34], "little")
    size = int.from_bytes(head[40:44], "little")
    return size / (rate * block) if rate and block else 0.0


def recording_duration_s(rec_dir: Path, events: list[dict[str, Any]]) -> float:
    meta = read_meta(rec_dir)
    if isinstance(meta.get("duration_s"), (int, float)):
        return float(meta["duration_s"])
    last_t = max((float(e["t"]) for e in events), default=0.0)
    return max(last_t, wav_duration_s(rec_dir / "mic.wav"),
               wav_duration_s(rec_dir / "assistant.wav"))


def is_live(rec_dir: Path) -> bool:
    """True while a writer holds the recording's lock (in this or another process)."""
    lock = Path(rec_dir) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also releases our probe lock
    return False


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue  # removed while we counted
    return total


def _recording_dirs(root: Path) -> Iterator[Path]:
    """Direct children that are real directories named like recordings (no links)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        if RECORDING_ID_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def info(root: Path, rec_id: str) -> RecordingInfo:
    path = resolve(root, rec_id)
    events = read_events(path / "events.jsonl")
    meta = read_meta(path)
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else count_events(events)
    live = is_live(path)
    stamp = rec_id[:15]
    return RecordingInfo(
        id=rec_id,
        started=f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}",
        duration_s=round(recording_duration_s(path, events), 1),
        n_questions=int(counts.get("questions", 0)),
        n_replies=int(counts.get("replies", 0)),
        n_proactive=int(counts.get("proactive", 0)),
        size_bytes=dir_size(path),
        live=live,
        complete=bool(meta.get("complete")) and not live,
    )


def list_recordings(root: Path) -> list[RecordingInfo]:
    """All recordings under ``root``, newest first."""
    rows = []
    for path in _recording_dirs(Path(root)):
        try:
            rows.append(info(root, path.name))
        except RecordingError:
            continue  # vanished or turned into something we refuse between scan and read
    return sorted(rows, key=lambda r: r.id, reverse=True)


def delete(root: Path, rec_id: object) -> None:
    path = resolve(root, rec_id)
    if is_live(path):
        raise RecordingError(f"recording {path.name} is still being written")
    shutil.rmtree(path)


def enforce_retention(root: Path, max_bytes: int, protect: Path | None = None) -> list[str]:
    """Delete the oldest recordings until the total fits in ``max_bytes``; returns the ids
    deleted. ``protect`` and recordings being written are never deleted."""
    keep = Path(protect).resolve() if protect is not None else None
    dirs = sorted(_recording_dirs(Path(root)), key=lambda p: p.name)  # oldest first
    sizes = {p: dir_size(p) for p in dirs}
    total = sum(sizes.values())
    deleted: list[str] = []
    for path in dirs:
        if total <= max_bytes:
            break
        if path.resolve() == keep or is_live(path):
            continue
        shutil.rmtree(path, ignore_errors=False)
        total -= sizes[path]
        deleted.append(path.name)
    return deleted
