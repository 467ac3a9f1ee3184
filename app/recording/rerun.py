"""Replay a recording as a regression run: same inputs, current models, what changed.

Contract: ``replay_recording(config, rec_dir, out_dir, progress) -> dict`` re-runs a
recorded session headless and writes ``events.jsonl`` (the new run), ``comparison.json``
and ``comparison.md`` (app/recording/regression.py) into ``out_dir``; it returns the comparison.
Inputs are taken exactly as the model met them live, so the same model and seed give the
same decisions:
* video: the recorded chunks, bit for bit and with their boundaries (partial chunks
  included; app/recording/media.read_chunks);
* speech: the microphone track goes through the current VAD (speech/echo.EchoGuard, no
  playback reference) and ASR; each recorded voice question is replaced by the new
  transcript of the utterance ending nearest to it (typed questions are kept), and rides
  on the same chunk as in the recording;
* user controls: the session's starting settings (``meta.json``) and the recorded
  ``setting`` events (proactive on/off) and ``reset`` events, applied at the same chunk.
With an adapter (``config.engine.adapter``) the comparison also shows each annotated moment:
what the recording's model did, what the replay does, and what the note asked for.
What is not replayed: the assistant's voice (no playback, so no barge-ins and no
first-audio latency) and the live timing of the worker threads.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from app.config import Config
from app.events import ReplyEnded, StepDecision, UserText, to_record

MATCH_S = 1.0     # a re-detected utterance matches a recorded one ending within this


def _retranscribe(config: Config, rec_dir: Path, transcriber: Any) -> list[tuple[float, str, float]]:
    """(end_s, text, asr_ms) for each utterance the current VAD finds in the mic track."""
    from app.recording.media import mic_blocks
    from speech.audio import Reblocker
    from speech.echo import EchoGuard
    from speech.text import sanitize_text
    guard = EchoGuard(config.speech)
    reblock = None
    found = []
    for raw in mic_blocks(rec_dir):
        reblock = reblock or Reblocker(raw.sample_rate)
        for block in reblock.feed(raw.pcm, raw.t_s):
            for ev in guard.process(block, None).events:
                if ev.type == "speech_end":
                    t0 = time.perf_counter()
                    # sanitised like the live path (app/orchestrator.py), so the model gets the same question
                    text = sanitize_text(transcriber.transcribe(ev.pcm))
                    found.append((ev.t_s, text, (time.perf_counter() - t0) * 1000))
    return found


def _questions(events: list[dict], heard: list[tuple[float, str, float]]) -> tuple[dict[int, str], list[dict]]:
    """New question text per chunk index, and the new ``user`` records."""
    users = [e for e in events if e.get("type") == "user"]
    steps = [e for e in events if e.get("type") == "step" and e.get("question")]
    pool = list(heard)
    by_chunk: dict[int, str] = {}
    records: list[dict] = []
    prev_t = -1.0
    for step in sorted(steps, key=lambda e: e["t"]):
        parts = []
        for u in users:
            if not prev_t < u["t"] <= step["t"]:
                continue
            if u.get("source") == "typed":
                parts.append(u["text"])
                records.append({**u})
                continue
            end = u.get("speech_end_s")
            best = min(pool, key=lambda h: abs(h[0] - end), default=None) if end is not None else None
            if best is not None and abs(best[0] - end) <= MATCH_S:
                pool.remove(best)
                parts.append(best[1])
                records.append(to_record(UserText(u["t"], best[1], "voice", best[0], round(best[2], 1))))
        prev_t = step["t"]
        text = " ".join(p.strip() for p in parts if p.strip())
        if text:
            by_chunk[int(step["chunk_index"])] = text
    return by_chunk, records


def replay_recording(config: Config, rec_dir: Path, out_dir: Path,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    from app.recording.media import read_chunks
    from app.recording import annotations as notes
    from app.recording.library import read_events, read_meta
    from app.recording.regression import compare, write_comparison
    from model.vlm import AuraModel
    from speech.asr import load_transcriber

    events_path = rec_dir / "events.jsonl"
    if not events_path.is_file():
        raise ValueError(f"{rec_dir}: not a recording folder (no events.jsonl)")
    old = read_events(events_path)
    chunks = list(read_chunks(rec_dir, old))
    if not chunks:
        raise ValueError(f"{rec_dir}: the recording holds no video chunks to replay")
    progress(f"replaying {len(chunks)} chunks of {rec_dir.name}")
    # a recording without voice questions (a file replay, typed questions) needs no ASR
    voiced = any(e.get("type") == "user" and e.get("source") == "voice" for e in old)
    heard = _retranscribe(config, rec_dir, load_transcriber(config.speech, progress)) if voiced else []
    questions, new = _questions(old, heard)
    controls = sorted((e for e in old if e.get("type") in ("setting", "reset")), key=lambda e: e["t"])
    proactive = bool(read_meta(rec_dir).get("session", {}).get("settings", {}).get("proactive", True))
    model = AuraModel.load(config.engine, progress)
    session = model.new_session("replay")
    try:
        for chunk in chunks:
            while controls and controls[0]["t"] <= chunk.start_s:
                c = controls.pop(0)
                if c["type"] == "reset":
                    session.reset()
                    new.append(c)
                elif c.get("name") == "proactive":
                    proactive = bool(c["value"])
            question = questions.get(chunk.index)
            for ev in session.step(chunk, question, allow_speak=proactive or question is not None):
                if isinstance(ev, (StepDecision, ReplyEnded)):
                    new.append(to_record(ev))
            while session.maintain(0.05):
                pass
    finally:
        session.close()
    new.sort(key=lambda r: r["t"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "events.jsonl", "w", encoding="utf-8") as f:
        for rec in new:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    result = compare(old, new, notes.load(rec_dir))
    paths = write_comparison(result, out_dir)
    progress(f"comparison written to {paths['markdown']}")
    return result
