"""The fine-tuning report: settings, speed, the loss curve, and each note before and after.

Contract: ``write_report(out_dir, settings, losses, seconds, samples_seen, moments) -> dict``
writes ``report.json`` (everything), ``report.md`` (the same for people) and ``loss.png``
(the loss per step and its running mean) into ``out_dir`` and returns the report. A note is
"fixed" when the adapter's decision at its chunk is what the note asks (speak for "say" and
"better", silent for "silent"); held-out notes are reported apart.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def loss_png(losses: list[float], path: Path, width: int = 640, height: int = 360) -> Path:
    """A plain chart drawn with OpenCV (already a dependency): grey per-step loss, blue mean."""
    import cv2
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    y = np.asarray(losses, np.float64)
    k = max(1, len(y) // 20)
    mean = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y
    lo, hi = float(min(y.min(), 0.0)), float(y.max()) or 1.0

    def pts(values: np.ndarray, offset: int) -> np.ndarray:
        xs = left + (np.arange(len(values)) + offset) * (width - left - right) / max(1, len(y) - 1)
        ys = height - bottom - (values - lo) / (hi - lo) * (height - top - bottom)
        return np.stack([xs, ys], 1).round().astype(np.int32)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), (200, 200, 200), 1)
    cv2.polylines(img, [pts(y, 0)], False, (170, 170, 170), 1, cv2.LINE_AA)
    cv2.polylines(img, [pts(mean, k - 1)], False, (200, 90, 20), 2, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "balanced loss per step (blue: running mean)", (left, 20), font, 0.5, (0, 0, 0), 1)
    cv2.putText(img, f"{hi:.3g}", (5, top + 5), font, 0.4, (0, 0, 0), 1)
    cv2.putText(img, f"{lo:.3g}", (5, height - bottom), font, 0.4, (0, 0, 0), 1)
    cv2.putText(img, f"step 1 .. {len(y)}", (left, height - 12), font, 0.45, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
    return path


def _row(m) -> dict[str, Any]:
    from app.teach.finetune import fixed
    after = m.after or {}
    return {"recording": m.recording, "note": m.note.n, "t": m.note.t, "chunk": m.note.chunk,
            "asked": m.note.label(), "held_out": m.held_out, "samples": m.samples,
            "before": {k: m.before.get(k) for k in ("decision", "p_silent", "reply")},
            "after": {k: after.get(k) for k in ("decision", "p_silent", "reply")},
            "fixed_before": fixed(m.note.kind, m.before.get("decision")),
            "fixed_after": fixed(m.note.kind, after.get("decision"))}


def _md_cell(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False).replace("|", "\\|") if isinstance(x, str) else str(x)


def write_report(out_dir: Path, settings: dict[str, Any], losses: list[float], seconds: float,
                 samples_seen: int, moments) -> dict[str, Any]:
    out_dir = Path(out_dir)
    rows = [_row(m) for m in moments]
    trained = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    report = {"settings": settings, "train_seconds": round(seconds, 2), "samples_seen": samples_seen,
              "samples_per_s": round(samples_seen / seconds, 3) if seconds > 0 else None,
              "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
              "losses": losses, "fixed": {"trained": [sum(r["fixed_after"] for r in trained), len(trained)],
                                          "held_out": [sum(r["fixed_after"] for r in held), len(held)]},
              "moments": rows}
    (out_dir / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    loss_png(losses, out_dir / "loss.png")
    lines = ["# Fine-tuning report", "", f"- base: {settings['base']}; LoRA rank {settings['rank']}; "
             f"{settings['steps']} steps of {settings['batch']} at lr {settings['lr']} (seed {settings['seed']})",
             f"- {settings['samples']} samples ({settings['samples_with_notes']} carry a note, drawn "
             f"x{settings['note_draw_repeat']}); {report['train_seconds']} s, {report['samples_per_s']} samples/s",
             f"- loss {report['loss_first']:.4f} -> {report['loss_last']:.4f} (loss.png)" if losses else "- no steps",
             f"- notes fixed: {report['fixed']['trained'][0]} of {report['fixed']['trained'][1]} trained on, "
             f"{report['fixed']['held_out'][0]} of {report['fixed']['held_out'][1]} held out",
             "- steps silent in the recording and without a note, still silent: "
             f"{settings['silent_kept'][0]} of {settings['silent_kept'][1]}", "",
             "| recording | note | t (s) | chunk | asked | before | after | decision as asked |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def did(d):
            return f"{d['decision']} {_md_cell(d['reply'])}" if d.get("reply") else str(d.get("decision"))
        lines.append(f"| {r['recording']} | #{r['note']}{' (held out)' if r['held_out'] else ''} | {r['t']} | "
                     f"{r['chunk']} | {_md_cell(r['asked'])} | {did(r['before'])} | {did(r['after'])} | "
                     f"{'yes' if r['fixed_after'] else 'no'} |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
