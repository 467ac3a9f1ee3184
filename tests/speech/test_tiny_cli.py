"""`python -m speech.tiny OUT_DIR` (issue 3 item 4) as a user runs it, and its models used
through the other speech CLIs: the tiny Whisper by `speech.asr --model DIR`, the tiny VITS by
`speech.tts --tts coqui --model DIR`, and a voice given as a Hugging Face id. Marked slow."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_tiny_cli_models_work_through_the_speech_clis(tmp_path, question_phrase):
    built = _run("speech.tiny", tmp_path / "tiny")
    assert built.returncode == 0, built.stderr[-2000:]
    paths = json.loads(built.stdout.strip().splitlines()[-1])
    assert set(paths) == {"whisper", "vits"}
    assert (Path(paths["whisper"]) / "model.bin").is_file()
    assert (Path(paths["whisper"]) / "tokenizer.json").is_file()

    heard = _run("speech.asr", question_phrase.path, "--model", paths["whisper"])
    assert heard.returncode == 0 and "Traceback" not in heard.stderr, heard.stderr[-2000:]
    assert heard.stdout.strip()          # random weights: some text, not meaningful text

    out = tmp_path / "hello.wav"
    spoken = _run("speech.tts", "Hello there.", "--out", out, "--tts", "coqui", "--model", paths["vits"])
    assert spoken.returncode == 0, spoken.stderr[-2000:]
    import soundfile
    pcm, rate = soundfile.read(out)
    assert rate > 0 and len(pcm) > rate // 10 and np.isfinite(pcm).all()


def test_tts_model_as_a_hugging_face_id(tmp_path):
    """`--tts-model owner/name` loads a Coqui model directory published on the hub: here a
    hub cache holding the tiny VITS (offline mode, so nothing is fetched); an id that is not
    cached is one clear line naming it."""
    import os
    from speech.tiny import build
    vits = build(tmp_path / "tiny")["vits"]
    snapshot = tmp_path / "hub" / "models--aura-test--tiny-vits" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in Path(vits).iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    def tts(model, out):
        return subprocess.run([sys.executable, "-m", "speech.tts", "Hello there.", "--out", str(out), "--tts",
                               "coqui", "--model", model], cwd=ROOT, capture_output=True, text=True,
                              timeout=180, env=env)
    done = tts("aura-test/tiny-vits", tmp_path / "a.wav")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "a.wav").stat().st_size > 1000
    missing = tts("aura-test/not-there", tmp_path / "b.wav")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "could not download the voice aura-test/not-there" in missing.stderr
