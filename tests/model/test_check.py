"""``launch.py check-model`` (model/check.py): the self-check for users with the real
weights (issue 12 item 9). On the tiny checkpoint here; on a real one where
``AURALIVE_CHECK_MODEL`` names a local checkpoint directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import EngineConfig
from model.check import run_check
from model.tiny import register_silent_special

ROOT = Path(__file__).resolve().parents[2]
REAL = os.environ.get("AURALIVE_CHECK_MODEL", "")


def _check(path, **cfg) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run_check(EngineConfig(model=str(path), **cfg), lines.append), lines


@pytest.mark.parametrize("silent_special", [False, True], ids=["added", "special"])
def test_tiny_checkpoint_passes(tiny_dir, tmp_path, silent_special):
    """Guards the check itself: on the tiny checkpoint (both ways of registering
    <|silent|>) the ids, the rendering, the pixels and the tokens per chunk all agree."""
    path = tiny_dir
    if silent_special:
        path = tmp_path / "tiny"
        shutil.copytree(tiny_dir, path)
        register_silent_special(path)
    code, lines = _check(path)
    text = "\n".join(lines)
    assert code == 0, text
    assert "<|silent|> (600, a" in text and "can be generated" in text and "can NOT" not in text
    assert ("a registered special token" if silent_special else "an added token") in text.split("<|silent|>")[1]
    assert "ids equal the chat template + processor's" in text
    assert "640x480: 266 tokens per chunk" in text and "1280x720: 264 tokens per chunk" in text
    code, lines = _check(path, pixel_budget="demo")
    assert code == 0 and "640x480: 300 tokens" in "\n".join(lines) and "1280x720: 364 tokens" in "\n".join(lines)


def test_a_template_the_engine_does_not_follow_is_a_mismatch(tiny_dir, tmp_path):
    """Guards the comparison: a chat template without the newline after <|im_end|> (the
    demo's defect) must fail with the first difference shown on both sides."""
    path = tmp_path / "tiny"
    shutil.copytree(tiny_dir, path)
    template = (path / "chat_template.jinja").read_text()
    (path / "chat_template.jinja").write_text(template.replace("'<|im_end|>\\n'", "'<|im_end|>'"))
    code, lines = _check(path)
    bad = [line for line in lines if line.startswith("MISMATCH rendering: first difference at id")]
    assert code == 1 and len(bad) == 1, lines
    assert "engine [" in bad[0] and "checkpoint [" in bad[0] and lines[-1].startswith("MISMATCH")


def test_bad_path_is_one_line_and_exit_2(tmp_path, capsys):
    """A path that is not a checkpoint, or a folder without one: one line on stderr, exit
    code 2 (no traceback)."""
    import launch
    assert launch.cmd_check_model([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no such model directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _check(empty)[0] == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_bad_path_through_the_launcher(tmp_path):
    """The same through ``python3 launch.py check-model`` in a process of its own."""
    env = {**os.environ, "AURALIVE_VENV": os.environ.get("AURALIVE_VENV", sys.prefix)}
    r = subprocess.run([sys.executable, "launch.py", "check-model", str(tmp_path / "missing")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "no such model directory" in r.stderr


@pytest.mark.skipif(not REAL, reason="AURALIVE_CHECK_MODEL does not name a local checkpoint "
                                     "(set it to a downloaded aurateam/AURA directory to run this)")
def test_real_checkpoint_passes():
    """The real checkpoint's tokenizer, chat template and processor agree with the engine."""
    if not Path(REAL).is_dir():
        pytest.fail(f"AURALIVE_CHECK_MODEL={REAL} is not a directory")
    code, lines = _check(REAL)
    assert code == 0, "\n".join(lines)
