"""The recipe rebuilds: a short run of `python -m model.train` learns the turn format and
the colour question (issue 14 item 2; slow: a few CPU minutes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[3]
STEPS = 120


@pytest.mark.slow
def test_a_short_rebuild_learns_the_format_and_the_colour_question(tmp_path):
    """After STEPS steps the CLI's model, loaded by the engine's loader and replayed on
    held-out mp4 streams, says only the task's sentences (the turn format and the replies
    are learned: no gibberish) and names the right colour in at least a third of the colour
    questions (chance is 1/6). Measured 2026-12-05: 9/14 after 120 steps (6/14 after 200;
    the full 450-step recipe: 33/33), so QA is only partly learned by a short rebuild."""
    from model.train import evaluate, tasks
    from model.train.world import NAMES
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "model.train", str(out), "--steps", str(STEPS)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"step {STEPS}/{STEPS} loss" in run.stderr
    assert json.loads((out / "aura_train.json").read_text())["steps"] == STEPS
    assert not (out / "train_state.pt").exists()
    model = evaluate.load(out)
    tally = Counter()
    sentences = {tasks.ACK} | {f(c) for c in NAMES for f in (tasks.answer_colour, tasks.alert)}
    texts = []
    for k in range(8):
        expected, got = evaluate.replay_stream(model, *evaluate.held_out(k, False, "qa"), tmp_path)
        evaluate.score(expected, got, tally)
        texts += [r["text"].strip() for r in got if r["type"] == "reply"]
    assert texts and all(t in sentences for t in texts), texts
    assert tally["qa"] >= 8 and tally["qa_ok"] >= tally["qa"] / 3, dict(tally)
