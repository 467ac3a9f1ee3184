"""Behaviour of a trained checkpoint on held-out streams, through the replay path.

Contract:
* ``python -m model.train.evaluate MODEL_DIR [--seed S] [--streams N] [--groups G,...]
  [--out FILE]`` prints (and writes as JSON) the figures per group.
* Each held-out stream (seeds from ``HELD_OUT_SEED``, never the recipe's) is written as an
  mp4 (OpenCV mp4v, 160x120, 10 fps), read back by ``app.replay.read_frames`` and stepped
  through one engine session by ``app.replay.Replayer`` (what ``launch.py replay`` runs),
  greedy, at the offline preset's pixel budget. The expected answers are ``tasks.script``
  over the same decoded frames.
* Figures (``score``):
  - QA correct: the reply names the colour of the chunk's last frame and no other;
  - alerts on time (the first proactive reply after a when-question comes at the event
    chunk or the next and names the colour), early, missed;
  - false alarms: spoken steps where silence is right (a late-by-one alert or change
    remark excepted);
  - acknowledgements; status and yes/no answers (only the script's exact sentence);
  - changes on time after an every-change request (its chunk or the next, the new colour).
* Groups (``GROUPS``): ``short`` (15..30 s) and ``long`` (60..90 s: the video window grows
  to 45 chunks and is cut) colour and when-questions; ``chase``, the alert drill's fast
  world, whose ``alert_past_change_pct`` (on time where another change came first) a model
  that alerts at the first change cannot pass; ``every``, an every-change request;
  ``status``, a when-question with one status question while it waits and one while
  nothing does.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from model.train import tasks
from model.train.world import NAMES

HELD_OUT_SEED = 10_000_000
SIZE = (120, 160)


def held_out(seed: int, long: bool, kind: str | None = None):
    """One held-out episode: a QA episode (35%) or an alert episode, or ``kind``."""
    rng = np.random.default_rng([HELD_OUT_SEED, seed, int(long)])
    duration = float(rng.uniform(60, 90) if long else rng.uniform(15, 30))
    pick = "qa" if rng.random() < 0.35 else "alert"
    kind = kind or pick
    return tasks.episode(rng, kind, duration, max_gap_s=25.0 if long else 10.0, after_s=12.0)


def replay_stream(model, world, asks, workdir: Path) -> tuple[list, list[dict]]:
    """(expected records, replay records) of one stream written as an mp4."""
    from app.replay import Ask, Replayer, read_frames
    video = world.write_video(workdir / "stream.mp4", tasks.FPS, *SIZE)
    expected = tasks.chunk_frames(read_frames(video), asks)
    session = model.new_session("eval")
    try:
        got = list(Replayer(session).run(read_frames(video), [Ask(a.t_s, a.text) for a in asks]))
    finally:
        session.close()
    return expected, got


def names_only(text: str, colour: str) -> bool:
    low = text.lower()
    return colour in low and not any(c in low for c in NAMES if c != colour)


def score(expected, got, tally: dict) -> None:
    """Add one stream's outcomes to ``tally`` (counters)."""
    steps = [r for r in got if r["type"] == "step"]
    replies = {round(r["t"], 3): r for r in got if r["type"] == "reply"}
    if len(steps) != len(expected):
        raise ValueError(f"replay gave {len(steps)} steps, the script {len(expected)}")
    spoke = [s["decision"] == "speak" for s in steps]
    text = [replies.get(round(s["t"], 3), {}).get("text", "") if sp else "" for s, sp in zip(steps, spoke)]
    excused = set()
    waiting = None      # (index of the when-question, target)
    for i, rec in enumerate(expected):
        if rec.question is not None and (tasks.is_status(rec.question) or tasks.parse_check(rec.question)):
            key = "status" if tasks.is_status(rec.question) else "check"   # the script's exact answer
            tally[key] += 1
            tally[f"{key}_ok"] += int(spoke[i] and text[i].strip() == rec.answer)
            continue
        if rec.question is not None:
            target = tasks.parse_target(rec.question)
            if target is None and not tasks.is_every(rec.question):
                tally["qa"] += 1
                tally["qa_ok"] += int(spoke[i] and names_only(text[i], tasks.chunk_colour(rec.frames)))
            else:
                tally["ack"] += 1
                tally["ack_ok"] += int(spoke[i] and text[i].strip() == tasks.ACK)
                waiting = (i, target) if target else waiting
            continue
        if rec.answer is not None and waiting is not None:   # the event chunk
            q, target = waiting
            waiting = None
            tally["alerts"] += 1
            fired = [j for j in range(q + 1, len(expected)) if spoke[j] and expected[j].question is None]
            first = fired[0] if fired else None
            if first is not None and first < i:
                tally["alert_early"] += 1
            elif first is not None and first <= i + 1 and names_only(text[first], target):
                tally["alert_ok"] += 1
                excused.add(first)
            else:
                tally["alert_missed"] += 1
        elif rec.answer is not None:                          # a change after "every time ..."
            colour = tasks.chunk_colour(rec.frames)
            tally["changes"] += 1
            late = i + 1 < len(expected) and expected[i + 1].answer is None and spoke[i + 1]
            if spoke[i] and names_only(text[i], colour):
                tally["change_ok"] += 1
            elif not spoke[i] and late and names_only(text[i + 1], colour):
                tally["change_ok"] += 1
                excused.add(i + 1)
    for i, rec in enumerate(expected):
        if rec.answer is None and i not in excused:
            tally["silent_steps"] += 1
            tally["false_alarms"] += int(spoke[i])


def summary(tally: dict) -> dict:
    def pct(a, b):
        return round(100.0 * tally[a] / tally[b], 1) if tally[b] else None
    return {"qa_correct_pct": pct("qa_ok", "qa"), "ack_pct": pct("ack_ok", "ack"),
            "alert_on_time_pct": pct("alert_ok", "alerts"), "alert_early_pct": pct("alert_early", "alerts"),
            "alert_missed_pct": pct("alert_missed", "alerts"),
            "false_alarm_pct": pct("false_alarms", "silent_steps"),
            "alert_past_change_pct": pct("past_change_ok", "past_change"),
            "change_on_time_pct": pct("change_ok", "changes"),
            "status_correct_pct": pct("status_ok", "status"), "check_correct_pct": pct("check_ok", "check"), **tally}


def load(model_dir: Path):
    """The checkpoint through the engine's loader, at the offline preset's pixel budget."""
    from app.config import EngineConfig
    from model.train.checkpoint import MAX_PIXELS
    from model.vlm import AuraModel
    return AuraModel.load(EngineConfig(model=str(model_dir), device="cpu", max_pixels=MAX_PIXELS))


def changes_first(world, asks) -> int:
    """How many other changes come between the when-question and its event."""
    when = next(a for a in asks if tasks.parse_target(a.text))
    target = tasks.parse_target(when.text)
    event = min(s for s, c in world.changes() if c == target and s > when.t_s)
    return sum(1 for s, _ in world.changes() if when.t_s < s < event)


GROUPS = (("short", False, None), ("long", True, None), ("chase", False, "chase"), ("every", False, "every"),
          ("status", False, "idle_status_alert"))


def evaluate(model_dir: Path, streams: int, seed: int = 0, progress=None, groups=None) -> dict:
    """``groups``: names from ``GROUPS`` (default all)."""
    from collections import Counter
    model = load(model_dir)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, long, kind in GROUPS:
            if groups and name not in groups:
                continue
            tally = Counter()
            for k in range(streams):
                world, asks = held_out(seed + k, long, kind)
                expected, got = replay_stream(model, world, asks, Path(tmp))
                before = tally["alert_ok"]
                score(expected, got, tally)
                if kind == "chase" and changes_first(world, asks):
                    tally["past_change"] += 1
                    tally["past_change_ok"] += tally["alert_ok"] - before
                if progress:
                    progress(f"{name} stream {k + 1}/{streams}: {dict(tally)}")
            out[name] = summary(tally)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.train.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--streams", type=int, default=40, help="streams per group")
    ap.add_argument("--groups", default=",".join(g[0] for g in GROUPS),
                    help="comma-separated groups to run (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    groups = [g for g in args.groups.split(",") if g]
    if not (args.model_dir / "config.json").is_file() or args.streams < 1 \
            or not groups or set(groups) - {g[0] for g in GROUPS}:
        print(f"error: MODEL_DIR must be a checkpoint folder, --streams >= 1 and --groups among "
              f"{','.join(g[0] for g in GROUPS)}", file=sys.stderr)
        return 2
    result = evaluate(args.model_dir, args.streams, args.seed,
                      lambda line: print(line, file=sys.stderr, flush=True), groups)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
