"""The whole pipeline, top to bottom, in one place.

Contract: ``build_runtime(config, progress)`` loads every shared resource once, on the
devices chosen by app/placement.py: the AURA model (model/vlm.py), the ASR model
(speech/asr.py) and the voice (speech/voices.py), and starts the two shared workers
(one engine thread for all sessions, one ASR thread). It returns a ``Runtime`` that
sessions use to make their own per-session parts (frame sampler, echo guard with VAD,
TTS stream). A model that cannot be loaded raises ``LoadError`` with one line. Per
session, app/live.py wires: camera -> FrameSampler -> Orchestrator -> EngineWorker ->
TTSStream -> speaker, and mic -> EchoGuard (VAD, barge-in) -> AsrWorker -> Orchestrator.
``Runtime.close()`` stops the workers.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from app.config import Config
from app.placement import Placement, plan_placement
from app.workers import AsrWorker, EngineWorker

Progress = Callable[[str], None]


class LoadError(RuntimeError):
    """A model could not be loaded; the message is one actionable line."""


@dataclass
class Runtime:
    config: Config
    placement: Placement
    model: Any
    transcriber: Any
    voice: Any
    engine_worker: EngineWorker
    asr_worker: AsrWorker

    def new_sampler(self) -> Any:
        from app.sampler import FrameSampler
        return FrameSampler()

    def new_echo_guard(self, io: Any) -> Any:
        """Echo suppression against what ``io`` played, when it can tell (local speakers);
        the browser cancels echo itself, so it gets the gating and barge-in rules only."""
        from speech.echo import EchoGuard
        return EchoGuard(self.config.speech, reference=getattr(io, "reference", None))

    def new_tts_stream(self, emit: Callable, clock: Any, on_error: Callable) -> Any:
        from speech.tts import TTSStream
        return TTSStream(self.voice, emit, clock, on_error=on_error)

    def close(self) -> None:
        self.engine_worker.stop()
        self.asr_worker.stop()


def count_gpus() -> int:
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def build_runtime(config: Config, progress: Progress, n_gpus: int | None = None) -> Runtime:
    from model.vlm import AuraModel, ModelLoadError
    from speech.asr import AsrLoadError, load_transcriber
    from speech.voices import TtsLoadError, load_voice

    placement = plan_placement(count_gpus() if n_gpus is None else n_gpus, config.engine.device,
                               config.speech.asr_device, config.speech.tts_device)
    if placement.warning:
        progress(placement.warning)
    engine_cfg = replace(config.engine, device=",".join(placement.vlm))
    speech_cfg = replace(config.speech, asr_device=placement.asr, tts_device=placement.tts)
    config = replace(config, engine=engine_cfg, speech=speech_cfg)
    try:
        progress(f"loading the VLM {engine_cfg.model} on {engine_cfg.device}")
        model = AuraModel.load(engine_cfg, progress, sessions=config.app.max_sessions)
        progress(f"loading speech recognition ({speech_cfg.asr_model}) on {speech_cfg.asr_device}")
        transcriber = load_transcriber(speech_cfg, progress)
        progress(f"loading the voice ({speech_cfg.tts}) on {speech_cfg.tts_device}")
        voice = load_voice(speech_cfg, progress)
    except (ModelLoadError, AsrLoadError, TtsLoadError) as e:
        raise LoadError(str(e)) from None
    engine_worker = EngineWorker().start()
    asr_worker = AsrWorker(transcriber).start()
    return Runtime(config, placement, model, transcriber, voice, engine_worker, asr_worker)
