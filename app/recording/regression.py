"""Replay as regression: compare a recording's events with a re-run's events.

Contract: ``compare(old_events, new_events) -> dict`` takes two ``events.jsonl`` lists
(dicts as ``app.recording.library.read_events`` returns) and reports
* ``steps``: decisions aligned by ``chunk_index`` (by order when indexes are missing or
  repeated): which changed silent<->speak, which exist on one side only, the largest
  ``p_silent`` change; ``identical_decisions`` is True when every step matches;
* ``replies``: replies aligned to the chunk whose step spoke them (the last speak step at
  or before ``reply_start``): text or ``proactive`` changed, or present on one side only;
* ``latency``: per stage median/p90 old, new and delta in ms (``latency_summary``), plus
  the step time (``step_summary``);
* ``annotations`` (given the recording's notes): per note the recorded decision at its
  chunk, the replay's, what was asked, and ``done`` (the replay does what the note asks).
``write_comparison(result, out_dir)`` writes ``comparison.json`` and ``comparison.md`` and
returns their paths; ``format_markdown(result)`` is the human-readable text. Pure functions:
no clock, no files except in ``write_comparison``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# name -> (end field, start field) of a Latency record, in stream seconds
LATENCY_STAGES = {
    "speech_end_to_first_audio": ("first_audio_s", "speech_end_s"),
    "asr": ("transcript_s", "speech_end_s"),
    "transcript_to_first_token": ("first_token_s", "transcript_s"),
    "first_token_to_first_audio": ("first_audio_s", "first_token_s"),
}


def _stats(values: list[float]) -> dict[str, Any]:
    """n, median and p90 (None when there are no values)."""
    if not values:
        return {"n": 0, "p50": None, "p90": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": len(values), "p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90))}


def latency_summary(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-stage latency stats in ms over the recording's ``latency`` records (stages
    that never happened are left out)."""
    out = {}
    for name, (end, start) in LATENCY_STAGES.items():
        values = [1000.0 * (float(e[end]) - float(e[start])) for e in events
                  if e.get("type") == "latency" and isinstance(e.get(end), (int, float))
                  and isinstance(e.get(start), (int, float))]
        if values:
            out[name] = _stats(values)
    ttft = [float(e["ttft_ms"]) for e in events
            if e.get("type") == "reply" and isinstance(e.get("ttft_ms"), (int, float))]
    if ttft:
        out["ttft"] = _stats(ttft)
    return out


def step_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [e for e in events if e.get("type") == "step"]
    stats = _stats([float(e.get("step_ms", 0.0)) for e in steps])
    return {"steps": len(steps), "speak": sum(1 for e in steps if e.get("decision") == "speak"),
            "step_ms_p50": stats["p50"], "step_ms_p90": stats["p90"]}


def _steps_by_key(events: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], bool]:
    steps = [e for e in events if e.get("type") == "step"]
    indexes = [e.get("chunk_index") for e in steps]
    by_index = all(isinstance(i, int) for i in indexes) and len(set(indexes)) == len(indexes)
    if by_index:
        return {int(e["chunk_index"]): e for e in steps}, True
    return dict(enumerate(steps)), False


def _replies_by_key(events: list[dict[str, Any]], steps: dict[int, dict[str, Any]]) -> dict[int, dict]:
    speak = sorted(((float(s["t"]), k) for k, s in steps.items() if s.get("decision") == "speak"))
    started = {e.get("reply_id"): float(e["t"]) for e in events if e.get("type") == "reply_start"}
    out: dict[int, dict[str, Any]] = {}
    for reply in (e for e in events if e.get("type") == "reply"):
        t = started.get(reply.get("reply_id"), float(reply["t"]))
        keys = [k for ts, k in speak if ts <= t + 1e-6]
        key = keys[-1] if keys else -1
        if key in out:  # two replies on one chunk: keep them apart, in order
            key = max(out) + 1_000_000
        out[key] = reply
    return out


def _decision(step: dict[str, Any]) -> dict[str, Any]:
    return {"t": step.get("t"), "decision": step.get("decision"), "p_silent": step.get("p_silent"),
            "question": step.get("question")}


def annotated(old_events: list[dict[str, Any]], new_events: list[dict[str, Any]], notes) -> list[dict]:
    """Per note (app/recording/annotations.py): the recorded decision at its chunk (the base),
    the replay's, what was asked, and whether the replay does it."""
    from app.recording.annotations import moment
    rows = []
    for a in notes:
        base, new = moment(old_events, a.chunk), moment(new_events, a.chunk)
        rows.append({"note": a.n, "t": a.t, "chunk": a.chunk, "kind": a.kind, "asked": a.label(),
                     "base": base, "replay": new,
                     "done": new["decision"] == ("silent" if a.kind == "silent" else "speak")})
    return rows


def compare(old_events: list[dict[str, Any]], new_events: list[dict[str, Any]],
            notes=()) -> dict[str, Any]:
    old_steps, old_indexed = _steps_by_key(old_events)
    new_steps, new_indexed = _steps_by_key(new_events)
    changed, max_dp = [], 0.0
    for key in sorted(old_steps.keys() & new_steps.keys()):
        a, b = old_steps[key], new_steps[key]
        if isinstance(a.get("p_silent"), (int, float)) and isinstance(b.get("p_silent"), (int, float)):
            max_dp = max(max_dp, abs(float(a["p_silent"]) - float(b["p_silent"])))
        if a.get("decision") != b.get("decision"):
            changed.append({"chunk": key, "old": _decision(a), "new": _decision(b)})
    only_old = sorted(old_steps.keys() - new_steps.keys())
    only_new = sorted(new_steps.keys() - old_steps.keys())

    old_replies = _replies_by_key(old_events, old_steps)
    new_replies = _replies_by_key(new_events, new_steps)
    reply_changes = []
    for key in sorted(old_replies.keys() | new_replies.keys()):
        a, b = old_replies.get(key), new_replies.get(key)
        if a is not None and b is not None and a.get("text") == b.get("text") \
                and bool(a.get("proactive")) == bool(b.get("proactive")):
            continue
        reply_changes.append({
            "chunk": key,
            "old": None if a is None else {"t": a.get("t"), "text": a.get("text"), "proactive": a.get("proactive")},
            "new": None if b is None else {"t": b.get("t"), "text": b.get("text"), "proactive": b.get("proactive")},
        })

    latency = {}
    old_lat, new_lat = latency_summary(old_events), latency_summary(new_events)
    old_lat["step"] = _stats([float(s.get("step_ms", 0.0)) for s in old_steps.values()])
    new_lat["step"] = _stats([float(s.get("step_ms", 0.0)) for s in new_steps.values()])
    for name in sorted(old_lat.keys() | new_lat.keys()):
        a = old_lat.get(name, _stats([]))
        b = new_lat.get(name, _stats([]))
        latency[name] = {"n_old": a["n"], "n_new": b["n"]}
        for q in ("p50", "p90"):
            latency[name].update({f"old_{q}_ms": a[q], f"new_{q}_ms": b[q],
                                  f"delta_{q}_ms": None if a[q] is None or b[q] is None else b[q] - a[q]})
    return {
        "identical_decisions": not changed and not only_old and not only_new,
        "aligned_by": "chunk_index" if old_indexed and new_indexed else "order",
        "steps": {"old": len(old_steps), "new": len(new_steps), "compared": len(old_steps.keys() & new_steps.keys()),
                  "changed": changed, "only_old": only_old, "only_new": only_new,
                  "max_abs_p_silent_delta": round(max_dp, 6)},
        "replies": {"old": len(old_replies), "new": len(new_replies), "changed": reply_changes},
        "latency": latency,
        "annotations": annotated(old_events, new_events, notes),
    }


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"  # None when a side has no samples


def format_markdown(result: dict[str, Any]) -> str:
    s, r = result["steps"], result["replies"]
    verdict = "identical" if result["identical_decisions"] else "CHANGED"
    lines = ["# Replay comparison", "",
             f"- decisions: {verdict} ({s['compared']} steps compared, aligned by {result['aligned_by']}; "
             f"{len(s['changed'])} changed, {len(s['only_old'])} only in the recording, "
             f"{len(s['only_new'])} only in the replay; largest p_silent change {s['max_abs_p_silent_delta']:.4f})",
             f"- replies: {r['old']} recorded, {r['new']} replayed, {len(r['changed'])} differ", ""]
    if s["changed"]:
        lines += ["## Changed decisions", "", "| chunk | t (s) | recorded | replay |", "|---|---|---|---|"]
        for c in s["changed"]:
            lines.append(f"| {c['chunk']} | {c['old']['t']} | {c['old']['decision']} (p_silent "
                         f"{c['old']['p_silent']}) | {c['new']['decision']} (p_silent {c['new']['p_silent']}) |")
        lines.append("")
    if r["changed"]:
        lines += ["## Changed replies", ""]
        for c in r["changed"]:
            old = "(none)" if c["old"] is None else json.dumps(c["old"]["text"], ensure_ascii=False)
            new = "(none)" if c["new"] is None else json.dumps(c["new"]["text"], ensure_ascii=False)
            lines.append(f"- chunk {c['chunk']}: {old} -> {new}")
        lines.append("")
    if result.get("annotations"):
        def did(d: dict[str, Any]) -> str:
            reply = f" {json.dumps(d['reply'], ensure_ascii=False)}" if d.get("reply") else ""
            return f"{d.get('decision')}{reply}".replace("|", "\\|")
        lines += ["## Annotated moments", "", "| note | t (s) | chunk | recorded (base) | replay | asked | decision as asked |",
                  "|---|---|---|---|---|---|---|"]
        for a in result["annotations"]:
            asked = json.dumps(a["asked"], ensure_ascii=False).replace("|", "\\|")
            lines.append(f"| #{a['note']} | {a['t']} | {a['chunk']} | {did(a['base'])} | {did(a['replay'])} "
                         f"| {asked} | {'yes' if a['done'] else 'no'} |")
        lines.append("")
    lines += ["## Latency (ms)", "", "| stage | recorded p50 | replay p50 | delta | recorded p90 | replay p90 | delta |",
              "|---|---|---|---|---|---|---|"]
    for name, v in result["latency"].items():
        lines.append(f"| {name} | {_ms(v['old_p50_ms'])} | {_ms(v['new_p50_ms'])} | {_ms(v['delta_p50_ms'])} "
                     f"| {_ms(v['old_p90_ms'])} | {_ms(v['new_p90_ms'])} | {_ms(v['delta_p90_ms'])} |")
    return "\n".join(lines) + "\n"


def write_comparison(result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "comparison.json", "markdown": out_dir / "comparison.md"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str),
                             encoding="utf-8")
    paths["markdown"].write_text(format_markdown(result), encoding="utf-8")
    return paths
