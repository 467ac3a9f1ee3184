"""Voices: text in, mono float32 audio out (Coqui TTS models, or espeak-ng).

Contract: a ``Voice`` has ``sample_rate`` (Hz), ``description`` and
``synthesize(text) -> np.ndarray`` (1-D float32 in [-1, 1]); it is called from one thread
(the TTS worker). ``load_voice(cfg, progress=None)`` picks and loads one:
* ``speech.tts = "coqui"`` (default): ``speech.tts_model`` is ``auto`` (=
  ``DEFAULT_COQUI_MODEL``, LJSpeech VITS: end-to-end, no separate vocoder, about 0.1-0.3 x
  real time on a laptop CPU, Apache-2.0 model on public-domain data), any Coqui model name
  (downloaded once by Coqui's model manager, with its progress bar), a Hugging Face id
  ``owner/name`` of a repository holding a Coqui model directory (downloaded once into the
  hub cache, then loaded as a local directory), or a local directory
  holding ``config.json`` and one ``*.pth`` checkpoint, loaded with
  ``TTS(model_path=..., config_path=...)``, the same path for tiny test models and real
  ones. Multi-speaker models use their first speaker; multilingual ones get ``language``
  "en". ``speech.tts_device`` ``auto`` means CUDA when torch sees a GPU.
* ``speech.tts = "espeak"``: espeak-ng as a real, robotic, fully offline voice
  (subprocess, text on stdin, WAV on stdout; ``speech.espeak_voice`` e.g. ``en-us``).
Failures raise ``TtsLoadError`` / ``TtsError`` with one actionable line.
"""
from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from app.config import SpeechConfig
from speech.audio import to_mono_float32

DEFAULT_COQUI_MODEL = "tts_models/en/ljspeech/vits"
_COQUI_NAME = re.compile(r"^(tts_models|vocoder_models|voice_conversion_models)/[\w.-]+/[\w.-]+/[\w.-]+$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")      # owner/name on the Hugging Face hub
_ESPEAK_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,39}$")
Progress = Callable[[str], None]


class TtsLoadError(RuntimeError):
    """The voice could not be loaded (one actionable line)."""


class TtsError(RuntimeError):
    """One synthesis call failed (one line)."""


class Voice(Protocol):
    sample_rate: int
    description: str

    def synthesize(self, text: str) -> np.ndarray: ...


class EspeakVoice:
    """espeak-ng through a subprocess (text on stdin, so no text is ever an option)."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 165) -> None:
        if not _ESPEAK_VOICE.match(voice):
            raise TtsLoadError(f"speech.espeak_voice: invalid voice name {voice!r}")
        self._exe = shutil.which("espeak-ng")
        if self._exe is None:
            raise TtsLoadError("espeak-ng is not installed (apt-get install espeak-ng)")
        self.voice, self.words_per_minute = voice, int(words_per_minute)
        self.description = f"espeak-ng {voice}"
        try:
            self.sample_rate = self._run("a")[1]
        except TtsError as e:
            raise TtsLoadError(f"espeak-ng voice {voice!r} does not work: {e}") from None

    def _run(self, text: str) -> tuple[np.ndarray, int]:
        import soundfile as sf
        cmd = [self._exe, "-v", self.voice, "-s", str(self.words_per_minute), "--stdout"]
        try:
            done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise TtsError("espeak-ng took more than 60 s") from None
        if done.returncode != 0 or not done.stdout:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise TtsError(f"espeak-ng failed ({why[0] if why else 'exit ' + str(done.returncode)})")
        data, rate = sf.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
        return to_mono_float32(data), int(rate)

    def synthesize(self, text: str) -> np.ndarray:
        return self._run(text)[0] if text.strip() else np.zeros(0, np.float32)


class CoquiVoice:
    """A loaded Coqui ``TTS`` object."""

    def __init__(self, tts, description: str) -> None:
        self._tts = tts
        self.description = description
        self.sample_rate = int(tts.synthesizer.output_sample_rate)
        self._kwargs: dict[str, str] = {}
        if tts.is_multi_speaker and tts.speakers:
            self._kwargs["speaker"] = tts.speakers[0]
        if tts.is_multi_lingual:
            self._kwargs["language"] = "en"

    def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, np.float32)
        try:
            wav = self._tts.tts(text, split_sentences=False, **self._kwargs)
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise TtsError(f"Coqui TTS failed on {text[:40]!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return to_mono_float32(np.asarray(wav, dtype=np.float32))


def _local_checkpoint(directory: Path) -> tuple[Path, Path]:
    config = directory / "config.json"
    checkpoints = sorted(directory.glob("*.pth"))
    if not config.is_file() or not checkpoints:
        raise TtsLoadError(f"{directory} is not a Coqui model directory (needs config.json and a *.pth checkpoint)")
    preferred = [p for p in checkpoints if p.name in ("model.pth", "best_model.pth", "model_file.pth")]
    return (preferred or checkpoints)[0], config


def _hub_snapshot(repo: str, progress: Progress) -> Path:
    """A Coqui model directory published on the Hugging Face hub (e.g. coqui/XTTS-v2),
    downloaded once into the hub cache."""
    from huggingface_hub import snapshot_download
    progress(f"TTS: fetching {repo} from the Hugging Face hub (cached after the first time)")
    try:
        return Path(snapshot_download(repo))
    except (OSError, ValueError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TtsLoadError(f"could not download the voice {repo} ({why}); check the network and the id, "
                           "or use --tts espeak, or a local model directory") from None


def _torch_device(cfg: SpeechConfig) -> str:
    import torch
    if cfg.tts_device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.tts_device.startswith("cuda") and not torch.cuda.is_available():
        raise TtsLoadError(f"speech.tts_device={cfg.tts_device} but torch sees no CUDA GPU")
    return cfg.tts_device


def load_coqui(cfg: SpeechConfig, progress: Progress) -> CoquiVoice:
    try:
        from TTS.api import TTS
    except ImportError as e:
        raise TtsLoadError(f"coqui-tts is not usable ({e}); pip install coqui-tts==0.28.0 six") from None
    name = cfg.tts_model.strip()
    name = DEFAULT_COQUI_MODEL if name == "auto" else name
    device = _torch_device(cfg)
    local = Path(name).expanduser()
    if not local.is_dir() and _HF_REPO.match(name) and not name.startswith(("/", ".", "~")):
        local = _hub_snapshot(name, progress)
    try:
        if local.is_dir():
            checkpoint, config = _local_checkpoint(local)
            progress(f"TTS: loading {local.name} on {device}")
            tts = TTS(model_path=str(checkpoint), config_path=str(config), progress_bar=False)
            label = f"Coqui {local.name}"
        elif _COQUI_NAME.match(name):
            progress(f"TTS: loading {name} on {device} (downloaded once if missing)")
            tts = TTS(model_name=name, progress_bar=True)
            label = f"Coqui {name.split('/', 1)[1]}"
        else:
            raise TtsLoadError(f"speech.tts_model={name!r}: not a directory, a Coqui model name like "
                               "tts_models/en/ljspeech/vits, or a Hugging Face id like coqui/XTTS-v2")
        tts = tts.to(device)
    except TtsLoadError:
        raise
    except EOFError:    # Coqui asks on stdin to accept a non-commercial licence (XTTS)
        raise TtsLoadError(f"Coqui model {name!r} needs its licence accepted interactively (or set "
                           "COQUI_TOS_AGREED=1 if you agree to it)") from None
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TtsLoadError(f"could not load Coqui model {name!r} ({first}); check the network, or use "
                           "--tts espeak, or a local model directory") from None
    return CoquiVoice(tts, f"{label} on {device}")


def load_voice(cfg: SpeechConfig, progress: Progress | None = None) -> Voice:
    say = progress or (lambda _msg: None)
    if cfg.tts == "espeak":
        return EspeakVoice(cfg.espeak_voice)
    return load_coqui(cfg, say)
