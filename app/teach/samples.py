"""Training streams from reviewed recordings: what the model saw, what it should have said.

Contract:
* ``recording_streams(rec_dir, held_out=()) -> (streams, moments)``: the recording as
  streams of ``model.train.tasks.ChunkRecord`` (the frames the model saw, bit for bit; the
  question asked at each chunk; the answer), cut at every ``reset`` (the engine forgot
  everything there). Answers are what the model said, except at an annotated chunk, where
  the note replaces it ("say"/"better": its text; "silent": ``None``).
* ``moments`` lists each note with the recorded decision at its chunk (``before``) and where
  it sits (stream, position). A note whose number is in ``held_out`` is not applied: its
  chunk stays in the stream as recorded (what the model saw and did), marked
  ``context_only``, so no sample is anchored at it or supervises its turn: it is measured
  on, never trained on, and the notes after it keep the context they were made in.
* ``build(streams, moments, layout, grid_of, windows) -> (samples, focus)``: the samples of
  ``model.train.samples.build_samples`` (one per answer, balanced loss, AURA's windows,
  plus one at the stream's end when it ends silent: silences after the last answer were
  reviewed too, and without it an adapter could learn to speak on after its last note);
  ``focus`` flags those that carry an applied note: the sample anchored at a "say"/"better"
  chunk, and the samples whose video window holds a "silent" chunk.
* A recording without video chunks raises ``ValueError`` (one line).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.recording import annotations as notes
from app.recording.library import read_events


@dataclass
class Moment:
    recording: str
    note: notes.Annotation
    before: dict[str, Any]
    held_out: bool = False
    stream: int = -1        # index into the streams (-1: held out)
    position: int = -1      # the chunk's place in that stream
    samples: int = 0        # training samples that show the note (see ``build``)
    after: dict[str, Any] = field(default_factory=dict)


def _chunk_records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") == "chunk" and e.get("frame_pts")]


def recording_streams(rec_dir: Path, held_out: set[int] | frozenset = frozenset()):
    from app.recording.media import read_chunks
    from model.train.tasks import ChunkRecord
    rec_dir = Path(rec_dir)
    events = read_events(rec_dir / "events.jsonl")
    chunk_recs = _chunk_records(events)
    frames = list(read_chunks(rec_dir, events))
    if not frames:
        raise ValueError(f"{rec_dir}: the recording holds no video the model saw (no chunks in video.mp4)")
    chunk_recs = chunk_recs[:len(frames)]   # a recording cut by a crash: the chunks it has
    resets = sorted(float(e["t"]) for e in events if e.get("type") == "reset")
    by_chunk: dict[int, list[notes.Annotation]] = {}
    for a in notes.load(rec_dir):
        by_chunk.setdefault(a.chunk, []).append(a)
    streams: list[list[Any]] = [[]]
    moments: list[Moment] = []
    last_t = -1.0
    for rec, chunk in zip(chunk_recs, frames):
        if any(last_t < r <= float(chunk.start_s) + 1e-6 for r in resets) and streams[-1]:
            streams.append([])
        last_t = float(chunk.t_s)
        step = notes.step_of(events, rec) or {}
        did = notes.did(events, rec)
        answer = (did["reply"] or None) if did["decision"] == "speak" else None
        here = by_chunk.pop(int(rec["index"]), [])      # a repeated index: its first chunk
        held = any(a.n in held_out for a in here)
        for a in here:    # a chunk with a held-out note is held out whole
            m = Moment(rec_dir.name, a, did, held_out=held)
            moments.append(m)
            if not held:
                answer = None if a.kind == "silent" else a.text
                m.stream, m.position = len(streams) - 1, len(streams[-1])
        streams[-1].append(ChunkRecord(tuple(chunk.frames), float(chunk.start_s), float(chunk.t_s),
                                       step.get("question") or None, answer, context_only=held))
    for rest in by_chunk.values():   # notes on chunks the video no longer holds (cut by a crash)
        moments.extend(Moment(rec_dir.name, a, {"decision": None, "p_silent": None, "reply": None},
                              held_out=True) for a in rest)
    return [s for s in streams if s], _renumber(streams, moments)


def _renumber(streams: list[list[Any]], moments: list[Moment]) -> list[Moment]:
    """Stream indexes after dropping the empty streams."""
    keep = [i for i, s in enumerate(streams) if s]
    new = {old: k for k, old in enumerate(keep)}
    for m in moments:
        m.stream = new.get(m.stream, -1) if m.stream >= 0 else -1
    return moments


def build(streams, moments: list[Moment], layout, grid_of, windows, loss: str = "balanced"):
    from model.train.samples import anchors, build_samples, window_start
    samples, focus = [], []
    for k, records in enumerate(streams):
        here = [m for m in moments if m.stream == k]
        got = build_samples(records, layout, grid_of, windows, loss, tail=True)
        for anchor, sample in zip(anchors(records, tail=True), got, strict=True):
            start = window_start(records, anchor, windows)
            shows = [m for m in here if (m.position == anchor if m.note.kind != "silent" else
                                         start - 1e-6 <= records[m.position].start_s <= records[anchor].start_s)]
            for m in shows:
                m.samples += 1
            samples.append(sample)
            focus.append(bool(shows))
    return samples, focus
