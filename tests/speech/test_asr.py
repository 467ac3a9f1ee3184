"""speech.asr: model choice, the tiny Whisper end to end through the real adapter, CLI errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.config import SpeechConfig
from speech.asr import CPU_DEFAULT, CPU_DEFAULT_EN, GPU_DEFAULT, AsrLoadError, choose_model, load_transcriber

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_hardware():
    """GPU: the accurate-but-fast turbo model in float16; CPU: a small English model in
    int8 (multilingual when the language is not English); explicit settings win."""
    gpu = choose_model(SpeechConfig(), cuda_devices=1)
    assert (gpu.model, gpu.device, gpu.compute_type, gpu.beam_size) == (GPU_DEFAULT, "cuda", "float16", 5)
    cpu = choose_model(SpeechConfig(), cuda_devices=0)
    assert (cpu.model, cpu.device, cpu.compute_type, cpu.beam_size) == (CPU_DEFAULT_EN, "cpu", "int8", 1)
    assert choose_model(SpeechConfig(asr_language="de"), 0).model == CPU_DEFAULT
    forced = choose_model(SpeechConfig(asr_device="cuda:1", asr_compute_type="int8_float16", asr_model="small"), 2)
    assert (forced.device, forced.device_index, forced.compute_type, forced.model) == ("cuda", 1, "int8_float16", "small")
    with pytest.raises(AsrLoadError, match="cuda:1"):
        choose_model(SpeechConfig(asr_device="cuda:1"), 1)


def test_local_directory_is_recognised(tiny_models):
    """A CTranslate2 directory must be loaded locally, never looked up on the hub."""
    choice = choose_model(SpeechConfig(asr_model=str(tiny_models["whisper"])), 0)
    assert choice.local and Path(choice.model) == tiny_models["whisper"].resolve()


def test_tiny_whisper_transcribes_through_the_real_adapter(tiny_models, question_phrase):
    """The tiny random Whisper goes through load_transcriber/transcribe exactly like a
    real model and yields text; silence yields "" without running the model."""
    messages = []
    tr = load_transcriber(SpeechConfig(asr_model=str(tiny_models["whisper"])), progress=messages.append)
    assert "cpu" in tr.description and messages
    text = tr.transcribe(question_phrase.pcm)
    assert isinstance(text, str) and text.strip()
    assert tr.transcribe(np.zeros(16000, np.float32)) == ""
    assert tr.transcribe(np.zeros(0, np.float32)) == ""
    # int16 input is converted, not misread
    assert tr.transcribe((question_phrase.pcm * 32767).astype(np.int16)).strip()


def test_bad_model_settings_are_one_line_errors(tmp_path, tiny_models):
    """A missing directory, a directory without a model, an unknown name: each must be a
    clear AsrLoadError, not a stack trace or a hub download attempt."""
    with pytest.raises(AsrLoadError, match="not found"):
        load_transcriber(SpeechConfig(asr_model=str(tmp_path / "nope")))
    with pytest.raises(AsrLoadError, match="missing model.bin"):
        load_transcriber(SpeechConfig(asr_model=str(tiny_models["vits"])))
    with pytest.raises(AsrLoadError, match="unknown ASR model"):
        load_transcriber(SpeechConfig(asr_model="whisper-gigantic"))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "speech.asr", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_cli_transcribes_and_reports_bad_input(tiny_models, question_phrase, tmp_path):
    """`python -m speech.asr FILE --model DIR` prints text; silence, a non-audio file and
    an unavailable model name each give one stderr line and exit code 2."""
    out = _cli(question_phrase.path, "--model", tiny_models["whisper"])
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    silent = tmp_path / "silent.wav"
    from speech.audio import write_wav
    write_wav(silent, np.zeros(16000, np.float32), 16000)
    for args, env in (((silent, "--model", tiny_models["whisper"]), None),
                      ((ROOT / "launch.py", "--model", tiny_models["whisper"]), None),
                      ((question_phrase.path, "--model", "base.en"), {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})):
        bad = _cli(*args, env=env)
        assert bad.returncode == 2, bad
        assert len(bad.stderr.strip().splitlines()) <= 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
