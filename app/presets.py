"""Presets: named bundles of settings. Today one: ``offline``.

Contract: ``apply_preset(config, cache_dir, progress) -> (config, banner)``. For
``app.preset == "offline"`` it builds (once, atomically, under ``cache_dir/offline``) a tiny
random AURA checkpoint with model/tiny.py and a tiny Whisper with speech/tiny.py, and
returns a config that uses them with the espeak-ng voice, plus a banner saying that the
answers are meaningless. The tiny AURA is built to always speak, and proactive remarks
start off: a question always gets an answer and the assistant does not babble on its own
(tick "Proactive remarks" to see it speak up every second). The preset wins over model settings given elsewhere. Without a
preset the config is returned unchanged with an empty banner.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable

from app.config import Config

OFFLINE_BANNER = ("Offline preset: tiny RANDOM models built on this machine are running, so the "
                  "assistant's answers are meaningless. Everything else is real: camera, microphone, "
                  "voice detection, captions, the espeak-ng voice, recording.")
TINY_SEED = 0


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
    """The tiny AURA dir alone (replay needs no speech models), built if missing."""
    from model import tiny as tiny_vlm
    vlm_dir = cache_dir / "offline" / "aura-tiny-talkative"
    _build_once(vlm_dir, lambda d: tiny_vlm.build(d, seed=TINY_SEED, silent_fraction=0.0), progress,
                "the tiny AURA model")
    return vlm_dir


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
    vlm_dir, whisper_dir = offline_models(cache_dir, progress)
    config = replace(config,
                     engine=replace(config.engine, model=str(vlm_dir)),
                     speech=replace(config.speech, asr_model=str(whisper_dir), tts="espeak"),
                     app=replace(config.app, proactive=False))
    return config, OFFLINE_BANNER
