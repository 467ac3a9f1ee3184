"""Presets: named bundles of settings. Today one: ``offline``.

Contract: ``apply_preset(config, cache_dir, progress) -> (config, banner)``. For
``app.preset == "offline"`` it uses the tiny AURA trained here on the colour world and
shipped in ``assets/aura-tiny-colours`` (model/train/, docs/training.md) at the pixel
budget it was trained at, and builds (once, atomically, under ``cache_dir/offline``) a
tiny random Whisper with speech/tiny.py; the voice is espeak-ng. Proactive remarks keep
the app's default (on; ``--no-proactive`` turns them off), so the model can speak up when
a colour it was asked about appears. The banner says what the model knows. The preset
wins over model settings given elsewhere. ``offline_engine`` is
the engine part alone (replay needs no speech models). Without a preset the config is
returned unchanged with an empty banner.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from app.config import Config

OFFLINE_BANNER = ("Offline preset: a tiny model trained here on coloured backgrounds is running. It "
                  "knows four things: type \"What colour is the background?\", \"Tell me when the "
                  "background turns blue.\" (it acknowledges, then speaks up once when the background "
                  "turns blue), \"Tell me every time the background changes.\" (a remark at each change), "
                  "or \"Which colour are you waiting for?\". The speech recogniser is a tiny RANDOM model, "
                  "so type your questions. Everything else is real: camera, microphone, captions, the "
                  "espeak-ng voice, recording.")
TRAINED_VLM = Path(__file__).resolve().parents[1] / "assets" / "aura-tiny-colours"


def _build_once(target: Path, build: Callable[[Path], object], progress: Callable[[str], None],
                what: str) -> dict[str, Path]:
    """Build into a temporary sibling, then rename: an interrupted build leaves nothing half-done.
    Returns the named paths ``build`` reported (a dict of paths, or the directory itself)."""
    index = target / ".complete.json"
    if not index.exists():
        progress(f"building {what} in {target} (first use only)")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            made = build(tmp)
            named = made if isinstance(made, dict) else {"root": tmp}
            rel = {k: str(Path(v).resolve().relative_to(tmp.resolve())) for k, v in named.items()}
            (tmp / ".complete.json").write_text(json.dumps(rel))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return {k: target / v for k, v in json.loads(index.read_text()).items()}


def offline_vlm(cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """The shipped trained tiny AURA (``python -m model.train`` rebuilds it)."""
    if not (TRAINED_VLM / "model.safetensors").is_file():
        raise ValueError(f"the offline preset's model is missing from {TRAINED_VLM}; rebuild it with "
                         f"`python -m model.train {TRAINED_VLM}` (docs/training.md)")
    return TRAINED_VLM


def offline_engine(engine, cache_dir: Path, progress: Callable[[str], None]):
    """``engine`` (an ``EngineConfig``) set to the trained tiny AURA at its pixel budget."""
    from model.train.checkpoint import MAX_PIXELS
    return replace(engine, model=str(offline_vlm(cache_dir, progress)), pixel_budget=str(MAX_PIXELS))


def offline_models(cache_dir: Path, progress: Callable[[str], None]) -> tuple[Path, Path]:
    """(tiny AURA dir, tiny Whisper CTranslate2 dir), built if missing."""
    from speech import tiny as tiny_speech
    vlm_dir = offline_vlm(cache_dir, progress)
    speech = _build_once(cache_dir / "offline" / "speech-tiny", tiny_speech.build, progress,
                         "the tiny speech models")
    return vlm_dir, speech["whisper"]


def apply_preset(config: Config, cache_dir: Path, progress: Callable[[str], None]) -> tuple[Config, str]:
    if config.app.preset != "offline":
        return config, ""
    _vlm_dir, whisper_dir = offline_models(cache_dir, progress)
    config = replace(config,
                     engine=offline_engine(config.engine, cache_dir, progress),
                     speech=replace(config.speech, asr_model=str(whisper_dir), tts="espeak"))
    return config, OFFLINE_BANNER
