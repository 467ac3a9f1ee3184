"""Export a recording as a shareable bundle, and the browser preview the Review tab plays.

Contract: ``export(recording_dir, out_zip) -> Path`` writes a zip holding, under
``<id>/``: ``<id>.mp4`` (H.264 yuv420p video at the recorded frame times, AAC stereo: LEFT
the user's microphone, RIGHT the assistant; the two caption tracks embedded as mov_text),
``captions/user.srt|vtt`` and ``captions/assistant.srt|vtt`` (left out when that side never
spoke, summary.md says so), ``events.jsonl``, ``annotations.jsonl`` (when there are notes, also
listed in summary.md),
``meta.json`` and ``summary.md``. ``preview(recording_dir, out_dir)`` writes the same mp4
without embedded text plus ``captions.vtt`` (both voices, "You:" / "AURA:") for a browser.
A folder that is not a recording raises ``ValueError`` (one line); ffmpeg failing raises
``RuntimeError`` with its last line. Works on recordings cut by a crash. Every text
(captions, summary) is sanitised (``speech.text.sanitize_text``), old recordings included.

Caption timing: a voice question spans its utterance (the ``speech_end`` whose end matches
the question's ``speech_end_s``; else it ends there), a typed one starts at its event. An
assistant sentence spans its audio in assistant.wav (``play_s``), cut at a barge-in; a reply
without audio starts at its ``reply_start`` (else its ``reply``) and lasts a reading time.
Uses the ``ffmpeg`` program (a system requirement, see app/bootstrap.py).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.recording import annotations
from app.recording import library as cat
from app.recording.regression import latency_summary, step_summary
from speech.text import sanitize_text


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def reading_time_s(text: str) -> float:
    return min(8.0, max(1.5, 0.06 * len(text)))


def user_cues(events: list[dict[str, Any]]) -> list[Cue]:
    ends = {round(float(e["t"]), 2): float(e.get("start_s", e["t"]))
            for e in events if e.get("type") == "speech_end"}
    cues = []
    for e in events:
        text = _said(e)
        if e.get("type") != "user" or not text:
            continue
        end = e.get("speech_end_s")
        if e.get("source") == "voice" and isinstance(end, (int, float)):
            start = ends.get(round(float(end), 2), float(end) - reading_time_s(text))
            cues.append(Cue(max(0.0, start), max(float(end), start + 1.0), text))
        else:
            t = float(e.get("t_event", e["t"]))
            cues.append(Cue(t, t + reading_time_s(text), text))
    return sorted(cues, key=lambda c: c.start_s)


def assistant_cues(events: list[dict[str, Any]]) -> list[Cue]:
    cut = {e["reply_id"]: float(e["t"]) for e in events if e.get("type") == "barge_in"}
    audio: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("type") == "tts_audio" and "play_s" in e:
            audio.setdefault(e["reply_id"], []).append(e)
    started = {e["reply_id"]: float(e["t"]) for e in events if e.get("type") == "reply_start"}
    cues = []
    for reply in (e for e in events if e.get("type") == "reply"):
        rid, text = reply.get("reply_id"), _said(reply)
        stop = cut.get(rid, float("inf"))
        parts = [(float(a["play_s"]), min(float(a["play_end_s"]), stop), _said(a))
                 for a in audio.get(rid, [])]
        parts = [p for p in parts if p[1] > p[0]]
        if parts and all(p[2] for p in parts):
            cues.extend(Cue(s, e, t) for s, e, t in parts)
        elif parts and text:
            cues.append(Cue(parts[0][0], parts[-1][1], text))
        elif text and not audio.get(rid):
            t = started.get(rid, float(reply["t"]))
            cues.append(Cue(t, min(stop, t + reading_time_s(text)), text))
    return sorted((c for c in cues if c.end_s > c.start_s), key=lambda c: c.start_s)


def _stamp(t_s: float, sep: str) -> str:
    ms = int(round(max(0.0, t_s) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _said(e: dict[str, Any]) -> str:
    """An event's text as a person may read it: sanitised, stripped."""
    return sanitize_text(str(e.get("text", ""))).strip()


def _clean(text: str) -> str:
    """Caption text on one line, with no blank lines or '-->' to break the cue format (and
    no control characters or U+FFFD, also in recordings made before they were filtered)."""
    return " ".join(sanitize_text(text).split()).replace("-->", "->")


def to_srt(cues: list[Cue]) -> str:
    return "".join(f"{i}\n{_stamp(c.start_s, ',')} --> {_stamp(c.end_s, ',')}\n{_clean(c.text)}\n\n"
                   for i, c in enumerate(cues, 1))


def to_vtt(cues: list[Cue]) -> str:
    # WebVTT text is markup: escape &, < and > so a transcript cannot inject tags
    body = "".join(f"{_stamp(c.start_s, '.')} --> {_stamp(c.end_s, '.')}\n"
                   f"{_clean(c.text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}\n\n"
                   for c in cues)
    return "WEBVTT\n\n" + body


def open_recording(recording_dir: Path) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    path = Path(recording_dir)
    if not path.is_dir() or not (path / "events.jsonl").is_file():
        raise ValueError(f"{recording_dir}: not a recording folder (no events.jsonl)")
    return path, cat.read_events(path / "events.jsonl"), cat.read_meta(path)


def _ffmpeg(args: list[str]) -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg not found: install it (apt-get install ffmpeg)")
    done = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise RuntimeError(f"ffmpeg failed: {lines[-1]}")


def render_mp4(rec_dir: Path, duration_s: float, out: Path,
               subtitles: list[tuple[Path, str]] = ()) -> None:
    """Playable mp4: the recorded frames + stereo (left mic, right assistant)."""
    length = f"{max(duration_s, 0.5):.3f}"
    video = rec_dir / "video.mp4"
    args = ["-err_detect", "ignore_err", "-i", str(video)] if video.is_file() and video.stat().st_size \
        else ["-f", "lavfi", "-i", "color=c=black:s=320x240:r=2"]
    sources = []
    for name in ("mic.wav", "assistant.wav"):
        if cat.wav_duration_s(rec_dir / name) > 0:
            sources.append(["-i", str(rec_dir / name)])
        else:
            sources.append(["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono"])
    for src in sources:
        args += src
    for path, _title in subtitles:
        args += ["-i", str(path)]
    args += ["-filter_complex",
             "[1:a]aresample=48000,apad[l];[2:a]aresample=48000,apad[r];"
             "[l][r]join=inputs=2:channel_layout=stereo[a];"
             "[0:v]scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p[v]",
             "-map", "[v]", "-map", "[a]"]
    for i, (_path, title) in enumerate(subtitles):
        args += ["-map", f"{3 + i}:s", f"-metadata:s:s:{i}", f"title={title}",
                 f"-metadata:s:s:{i}", "language=eng"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-fps_mode", "vfr",
             "-c:a", "aac", "-b:a", "128k", *(["-c:s", "mov_text"] if subtitles else []),
             "-t", length, "-movflags", "+faststart", str(out)]
    _ffmpeg(args)


def summary_text(rec_id: str, events: list[dict[str, Any]], meta: dict[str, Any],
                 duration_s: float) -> str:
    counts = cat.count_events(events)
    m, s = divmod(duration_s, 60)
    lines = [f"# AURA Live recording {rec_id}", "",
             f"- started: {meta.get('started_at', 'unknown')}; length {int(m)}:{s:04.1f}"
             f"; {'closed cleanly' if meta.get('complete') else 'not closed (crash or still recording)'}",
             f"- questions: {counts['questions']}; replies: {counts['replies']} (proactive "
             f"{counts['proactive']}, cancelled {counts['cancelled']}); barge-ins: "
             f"{counts['barge_ins']}; errors: {counts['errors']}"]
    steps = step_summary(events)
    if steps["steps"]:
        lines.append(f"- steps: {steps['steps']} ({steps['speak']} spoke); step time median "
                     f"{steps['step_ms_p50']:.0f} ms, p90 {steps['step_ms_p90']:.0f} ms")
    for name, stat in latency_summary(events).items():
        lines.append(f"- {name.replace('_', ' ')}: median {stat['p50']:.0f} ms, "
                     f"p90 {stat['p90']:.0f} ms over {stat['n']}")
    lines += ["", "## Conversation", ""]
    talk = [(c.start_s, "You", c.text) for c in user_cues(events)]
    for e in events:
        if e.get("type") == "reply" and _said(e):
            who = "AURA (proactive)" if e.get("proactive") else "AURA"
            who += " [cut off]" if e.get("cancelled") else ""
            talk.append((float(e["t"]), who, _said(e)))
    for t, who, text in sorted(talk, key=lambda x: x[0]):
        lines.append(f"- [{_stamp(t, '.')[3:]}] {who}: {_clean(text)}")
    errors = [e for e in events if e.get("type") == "error"]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- [{_stamp(float(e['t']), '.')[3:]}] {e.get('source')}: {_clean(str(e.get('message')))}"
                  for e in errors]
    return "\n".join(lines) + "\n"


def preview(recording_dir: Path, out_dir: Path) -> dict[str, Path]:
    """``{"video": preview.mp4, "captions": captions.vtt}`` in ``out_dir``."""
    rec, events, _meta = open_recording(recording_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cues = [Cue(c.start_s, c.end_s, f"You: {c.text}") for c in user_cues(events)]
    cues += [Cue(c.start_s, c.end_s, f"AURA: {c.text}") for c in assistant_cues(events)]
    captions = out_dir / "captions.vtt"
    captions.write_text(to_vtt(sorted(cues, key=lambda c: c.start_s)), encoding="utf-8")
    video = out_dir / "preview.mp4"
    render_mp4(rec, cat.recording_duration_s(rec, events), video)
    return {"video": video, "captions": captions}


def export(recording_dir: Path, out_zip: Path) -> Path:
    """Write the bundle (see the module contract); returns ``out_zip``."""
    rec, events, meta = open_recording(recording_dir)
    rec_id = rec.name
    out_zip = Path(out_zip)
    duration = cat.recording_duration_s(rec, events)
    tracks = {"user": user_cues(events), "assistant": assistant_cues(events)}
    with tempfile.TemporaryDirectory(prefix="aura-export-") as tmp:
        work = Path(tmp)
        texts = {}
        for who, cues in tracks.items():
            if not cues:  # nobody spoke on this side: no empty caption files (summary.md says so)
                continue
            texts[f"captions/{who}.srt"] = to_srt(cues)
            texts[f"captions/{who}.vtt"] = to_vtt(cues)
            (work / f"{who}.srt").write_text(texts[f"captions/{who}.srt"], encoding="utf-8")
        video = work / f"{rec_id}.mp4"
        subs = [(work / f"{who}.srt", who.capitalize()) for who, cues in tracks.items() if cues]
        render_mp4(rec, duration, video, subs)
        texts["summary.md"] = summary_text(rec_id, events, meta, duration) + "".join(
            f"\nNo {who} captions: {'AURA' if who == 'assistant' else 'the user'} said nothing.\n"
            for who, cues in tracks.items() if not cues)
        notes = annotations.load(rec)  # the testers' notes (app/recording/annotations.py)
        texts["summary.md"] += annotations.markdown(notes)
        if notes:
            texts["annotations.jsonl"] = "".join(map(annotations.to_line, notes))
        texts["meta.json"] = json.dumps(meta, indent=1, sort_keys=True)
        out_zip.parent.mkdir(parents=True, exist_ok=True)
        partial = out_zip.with_name(out_zip.name + ".part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(video, f"{rec_id}/{rec_id}.mp4", compress_type=zipfile.ZIP_STORED)
            z.write(rec / "events.jsonl", f"{rec_id}/events.jsonl")
            for name, text in texts.items():
                z.writestr(f"{rec_id}/{name}", text)
        os.replace(partial, out_zip)
    return out_zip
