"""Speech recognition: faster-whisper (CTranslate2 Whisper) behind one small adapter.

Contract:
* ``choose_model(cfg, cuda_devices) -> AsrChoice`` is the pure decision of what to load:
  - model ``auto``: ``large-v3-turbo`` on a GPU (near large-v3 accuracy, a 4-layer decoder
    makes it several times faster to decode); on CPU ``base.en`` when the language is
    English (``base`` otherwise): a live turn must be transcribed in well under a second
    on a laptop, and the CPU is shared with everything else. Any faster-whisper name
    (``small.en``, ``distil-large-v3`` ...), a hub id ``owner/name`` or a local
    CTranslate2 directory may be given instead.
  - device ``auto``: CUDA when CTranslate2 sees a GPU, else CPU; ``cuda:N`` picks one.
  - compute type ``auto``: float16 on GPU, int8 on CPU.
* ``load_transcriber(cfg, progress=None) -> Transcriber`` loads it. A local directory must
  hold ``model.bin`` and ``tokenizer.json`` and is opened with ``local_files_only`` (so
  nothing reaches the hub); a name is taken from the local Hugging Face cache or
  downloaded once (console progress bar; ``progress`` gets one-line status messages).
  Failures raise ``AsrLoadError`` with one actionable line.
* ``Transcriber.transcribe(pcm) -> str``: 16 kHz mono float32 in, text out (segments
  joined, stripped). Empty or near-silent input returns "" without running the model
  (Whisper invents text for silence). Decoding: no timestamps, no conditioning on
  previous text, greedy on CPU / beam 5 on GPU at temperature 0 only (no sampled
  fallback: the same audio always gives the same text) and the no-speech guard. One
  thread should own a Transcriber.
* ``python -m speech.asr FILE [--model NAME_OR_DIR]`` prints the text; bad input (or a
  file with no speech) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from app.config import SpeechConfig
from speech.audio import SAMPLE_RATE, AudioInputError, to_mono_float32

Progress = Callable[[str], None]

GPU_DEFAULT = "large-v3-turbo"
CPU_DEFAULT_EN = "base.en"
CPU_DEFAULT = "base"
SILENCE_PEAK = 1e-3          # below this peak level the input is treated as silence
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ALLOW = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


class AsrLoadError(RuntimeError):
    """The ASR model could not be found or loaded (message is one actionable line)."""


@dataclass(frozen=True)
class AsrChoice:
    model: str            # a faster-whisper name, a hub id, or a local directory
    local: bool
    device: str           # "cpu" | "cuda"
    device_index: int
    compute_type: str
    beam_size: int


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def choose_model(cfg: SpeechConfig, cuda_devices: int) -> AsrChoice:
    """Pure: which model, device and precision to use for ``cfg`` on this machine."""
    device, index = "cpu", 0
    if cfg.asr_device == "auto":
        device = "cuda" if cuda_devices > 0 else "cpu"
    elif cfg.asr_device.startswith("cuda"):
        device = "cuda"
        index = int(cfg.asr_device[5:]) if ":" in cfg.asr_device else 0
        if index >= cuda_devices:
            raise AsrLoadError(f"speech.asr_device={cfg.asr_device}: CTranslate2 sees {cuda_devices} CUDA device(s)")
    compute = cfg.asr_compute_type
    if compute == "auto":
        compute = "float16" if device == "cuda" else "int8"
    model = cfg.asr_model.strip()
    if model == "auto":
        if device == "cuda":
            model = GPU_DEFAULT
        else:
            model = CPU_DEFAULT_EN if cfg.asr_language == "en" else CPU_DEFAULT
    local = _looks_like_path(model)
    if local:
        model = str(Path(model).expanduser().resolve())
    return AsrChoice(model, local, device, index, compute, beam_size=5 if device == "cuda" else 1)


def _check_local_dir(path: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise AsrLoadError(f"ASR model directory not found: {p}")
    missing = [f for f in ("model.bin", "tokenizer.json") if not (p / f).is_file()]
    if missing:
        raise AsrLoadError(f"{p} is not a CTranslate2 Whisper directory (missing {', '.join(missing)}); "
                           "convert with ct2-transformers-converter --copy_files tokenizer.json preprocessor_config.json")


def _fetch(name: str, progress: Progress) -> str:
    """A local directory for a faster-whisper name or hub id (cache first, then download)."""
    from faster_whisper.utils import available_models, download_model
    if not _HUB_ID.match(name) and name not in available_models():
        raise AsrLoadError(f"unknown ASR model {name!r}: use one of {', '.join(available_models())}, "
                           "a hub id owner/name, or a local CTranslate2 directory")
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError
    try:
        return download_model(name, local_files_only=True)
    except OSError:
        progress(f"ASR: downloading {name} from the Hugging Face Hub (once)")
    from faster_whisper.utils import _MODELS
    try:
        return huggingface_hub.snapshot_download(name if _HUB_ID.match(name) else _MODELS[name],
                                                 allow_patterns=_ALLOW)
    except (OSError, HfHubHTTPError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AsrLoadError(f"could not download ASR model {name!r} ({first}); check the network, or set "
                           "speech.asr_model to a local CTranslate2 directory") from None


class Transcriber:
    """A loaded Whisper model; ``transcribe`` turns one utterance into text."""

    def __init__(self, model, choice: AsrChoice, language: str | None) -> None:
        self._model = model
        self.choice = choice
        self.language = language

    @property
    def description(self) -> str:
        c = self.choice
        name = Path(c.model).name if c.local else c.model
        return f"faster-whisper {name} on {c.device} ({c.compute_type})"

    def transcribe(self, pcm: np.ndarray) -> str:
        x = np.asarray(pcm)
        if x.dtype != np.float32 or x.ndim != 1:
            x = to_mono_float32(x)
        if len(x) == 0 or float(np.max(np.abs(x))) < SILENCE_PEAK:
            return ""
        # one temperature: with the fallback the same audio gave different text run to run
        # (measured, also after ctranslate2.set_random_seed), and a recording re-run must
        # hear the questions as they were
        segments, _info = self._model.transcribe(
            x, language=self.language, beam_size=self.choice.beam_size, temperature=0.0,
            without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments if s.text.strip())


def load_transcriber(cfg: SpeechConfig, progress: Progress | None = None) -> Transcriber:
    say = progress or (lambda _msg: None)
    try:
        import ctranslate2
        from faster_whisper import WhisperModel
    except ImportError:
        raise AsrLoadError("faster-whisper is not installed: pip install faster-whisper==1.2.1") from None
    choice = choose_model(cfg, ctranslate2.get_cuda_device_count())
    if choice.local:
        _check_local_dir(choice.model)
        path = choice.model
    else:
        path = _fetch(choice.model, say)
    say(f"ASR: loading {Path(path).name} on {choice.device} ({choice.compute_type})")
    try:
        model = WhisperModel(path, device=choice.device, device_index=choice.device_index,
                             compute_type=choice.compute_type, local_files_only=True)
    except (RuntimeError, ValueError, OSError) as e:
        raise AsrLoadError(f"could not load ASR model {path}: {str(e).splitlines()[0]}") from None
    return Transcriber(model, choice, cfg.asr_language or None)


def main(argv: list[str]) -> int:
    import argparse
    from speech.audio import read_audio, resample
    parser = argparse.ArgumentParser(prog="python -m speech.asr", description="Transcribe a sound file.")
    parser.add_argument("file")
    parser.add_argument("--model", default="auto", help="auto, a faster-whisper name, a hub id or a local CTranslate2 dir")
    parser.add_argument("--language", default="en", help='language code, or "" to detect')
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compute-type", default="auto")
    args = parser.parse_args(argv)
    try:
        cfg = SpeechConfig(asr_model=args.model, asr_language=args.language, asr_device=args.device,
                           asr_compute_type=args.compute_type)
        pcm, rate = read_audio(args.file)
        pcm = resample(pcm, rate, SAMPLE_RATE)
        if float(np.max(np.abs(pcm))) < SILENCE_PEAK:
            raise AudioInputError(f"{args.file}: no speech (the audio is silent)")
        transcriber = load_transcriber(cfg, progress=lambda m: print(m, file=sys.stderr))
        text = transcriber.transcribe(pcm)
    except (AudioInputError, AsrLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not text:
        print(f"error: {args.file}: no speech recognised", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
