"""Configuration: frozen, validated dataclasses and the layered merge that builds them.

Contract: ``Config`` holds ``engine`` (the VLM), ``speech`` (VAD/ASR/TTS) and ``app``
(server, sessions, recording, devices). Every dataclass validates itself in
``__post_init__`` and raises ``ValueError("<section>.<field>: <what is wrong>")``.
``build_config(*layers)`` merges plain nested dicts (defaults < file < environment < CLI,
later wins) into a ``Config``; unknown keys are errors. ``parse_config_text`` reads YAML
or TOML text, ``env_layer`` reads ``AURA_*`` variables from a mapping it is given. Only
``launch.py`` touches argv, the real environment and files; everything else receives a
``Config``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

BENCHMARK_SYSTEM_PROMPT = (
    "You are receiving a live video stream where the final frame is the present moment. "
    "Respond only when a response is needed based on the user's message or the visual "
    "context. Otherwise, output `<|silent|>` to signify silence."
)
DEFAULT_MODEL = "aurateam/AURA"
# Pixel budgets of one chunk (both frames together) that the AURA authors ran: the benchmark
# harness's (the published scores; 640x480 -> 266 tokens, 1280x720 -> 264) and the live
# demo's vLLM default (640x480 -> 300, 1280x720 -> 364). docs/engine.md says why the
# benchmark's is the default.
PIXEL_BUDGETS = {"benchmark": 602_112, "demo": 786_432}
MIN_PIXEL_BUDGET, MAX_PIXEL_BUDGET = 2 * 32 * 32, 16_000_000


def _fail(section: str, name: str, why: str) -> None:
    raise ValueError(f"{section}.{name}: {why}")


def _is_cuda_index(value: str) -> bool:
    return value.startswith("cuda:") and value[5:].isdigit()


def _check_device(section: str, name: str, value: str, split: bool = False) -> None:
    ok = value in ("auto", "cpu", "cuda") or _is_cuda_index(value)
    if split and "," in value:
        ok = all(_is_cuda_index(part.strip()) for part in value.split(","))
    if not ok:
        more = " or a list cuda:N,cuda:M to split the model" if split else ""
        _fail(section, name, f"expected auto, cpu, cuda or cuda:N{more}, got {value!r}")


def _check_range(section: str, name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or not lo <= value <= hi:
        _fail(section, name, f"must be a number in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """The AURA engine (model/)."""
    model: str = DEFAULT_MODEL            # HF id or local directory
    device: str = "auto"                  # auto | cpu | cuda | cuda:N | cuda:N,cuda:M (split)
    dtype: str = "auto"                   # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    backend: str = "auto"                 # auto | reference | fast
    system_prompt: str = BENCHMARK_SYSTEM_PROMPT
    language: str = ""                    # e.g. "English": appends "Respond in English."
    # pixel budget of one chunk (both frames together): benchmark (602,112) | demo (786,432)
    # | a number of pixels; ``max_pixels`` is the number it names
    pixel_budget: str = "benchmark"
    chunk_timestamp_s: float = 0.5        # the chunk-local "<0.5 seconds>" label
    video_window_s: float = 30.0          # N
    float_window_s: float = 15.0          # N'
    qa_window_groups: int = 10            # M
    max_group_rounds: int = 4
    max_new_tokens: int = 128
    temperature: float = 0.0              # 0 = greedy (the benchmarks' setting)
    top_p: float = 1.0
    repetition_penalty: bool = False      # the demo's cross-turn penalty (protocol section 4)
    seed: int = 0
    adapter: str = ""                     # a PEFT LoRA adapter folder, merged into the weights at load

    def __post_init__(self) -> None:
        s = "engine"
        if not self.model.strip():
            _fail(s, "model", "must name an HF model id or a local directory")
        _check_device(s, "device", self.device, split=True)
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            _fail(s, "dtype", f"expected auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.backend not in ("auto", "reference", "fast"):
            _fail(s, "backend", f"expected auto, reference or fast, got {self.backend!r}")
        budget = self.pixel_budget.strip()
        if budget not in PIXEL_BUDGETS and not (budget.isdigit()
                                                and MIN_PIXEL_BUDGET <= int(budget) <= MAX_PIXEL_BUDGET):
            _fail(s, "pixel_budget", f"expected benchmark, demo or a whole number of pixels in "
                  f"[{MIN_PIXEL_BUDGET}, {MAX_PIXEL_BUDGET}], got {self.pixel_budget!r}")
        _check_range(s, "chunk_timestamp_s", self.chunk_timestamp_s, 0.0, 1.0)
        _check_range(s, "video_window_s", self.video_window_s, 1.0, 600.0)
        _check_range(s, "float_window_s", self.float_window_s, 1.0, 600.0)
        _check_range(s, "qa_window_groups", self.qa_window_groups, 0, 1000)
        _check_range(s, "max_group_rounds", self.max_group_rounds, 1, 100)
        _check_range(s, "max_new_tokens", self.max_new_tokens, 1, 4096)
        _check_range(s, "temperature", self.temperature, 0.0, 10.0)
        _check_range(s, "top_p", self.top_p, 1e-6, 1.0)
        _check_range(s, "seed", self.seed, 0, 2**63 - 1)

    @property
    def max_pixels(self) -> int:
        """The pixel budget in pixels (both frames of a chunk together)."""
        budget = self.pixel_budget.strip()
        return PIXEL_BUDGETS[budget] if budget in PIXEL_BUDGETS else int(budget)


def _accept_max_pixels(init):
    """``EngineConfig(max_pixels=N)`` (the field before ``pixel_budget``) still works: it
    means ``pixel_budget=str(N)``; giving both is an error unless they agree."""
    def __init__(self, *args, max_pixels: int | None = None, **kwargs):
        if max_pixels is not None:
            if isinstance(max_pixels, bool) or not isinstance(max_pixels, int):
                _fail("engine", "max_pixels", f"expected a whole number of pixels, got {max_pixels!r}")
            budget = kwargs.get("pixel_budget")
            if budget is not None and budget != str(max_pixels) and PIXEL_BUDGETS.get(budget) != max_pixels:
                _fail("engine", "max_pixels", f"{max_pixels} contradicts pixel_budget {budget!r}")
            kwargs["pixel_budget"] = str(max_pixels)
        init(self, *args, **kwargs)
    __init__.__doc__ = init.__doc__
    return __init__


EngineConfig.__init__ = _accept_max_pixels(EngineConfig.__init__)


@dataclass(frozen=True)
class SpeechConfig:
    """VAD, ASR and TTS (speech/)."""
    vad_threshold: float = 0.5
    vad_min_silence_ms: int = 500
    vad_min_speech_ms: int = 250
    vad_preroll_ms: int = 300
    asr_model: str = "auto"               # auto | a faster-whisper name | a CTranslate2 dir
    asr_device: str = "auto"
    asr_compute_type: str = "auto"        # auto | float16 | int8 | int8_float16 | float32
    asr_language: str = "en"              # "" = detect
    tts: str = "coqui"                    # coqui | espeak
    tts_model: str = "auto"               # auto | a Coqui model name | a local model dir
    tts_device: str = "auto"
    espeak_voice: str = "en-us"
    barge_in_ms: int = 300

    def __post_init__(self) -> None:
        s = "speech"
        _check_range(s, "vad_threshold", self.vad_threshold, 0.01, 0.99)
        _check_range(s, "vad_min_silence_ms", self.vad_min_silence_ms, 32, 10_000)
        _check_range(s, "vad_min_speech_ms", self.vad_min_speech_ms, 0, 10_000)
        _check_range(s, "vad_preroll_ms", self.vad_preroll_ms, 0, 2_000)
        if not self.asr_model.strip():
            _fail(s, "asr_model", "must not be empty (use auto)")
        _check_device(s, "asr_device", self.asr_device)
        if self.asr_compute_type not in ("auto", "float16", "int8", "int8_float16", "float32"):
            _fail(s, "asr_compute_type", f"unknown compute type {self.asr_compute_type!r}")
        if self.tts not in ("coqui", "espeak"):
            _fail(s, "tts", f"expected coqui or espeak, got {self.tts!r}")
        _check_device(s, "tts_device", self.tts_device)
        _check_range(s, "barge_in_ms", self.barge_in_ms, 0, 5_000)


@dataclass(frozen=True)
class AppConfig:
    """Server, sessions, recording and devices (app/, ui/)."""
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: str = ""                        # "USER:PASS" or empty for none
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    max_sessions: int = 2
    preset: str = ""                      # "" | offline
    local_devices: bool = False
    camera: str = "0"                     # index or video file path (local devices)
    mic: str = ""                         # sounddevice name or index; "" = default
    speaker: str = ""
    hands_free: bool = True               # VAD; False = push-to-talk
    proactive: bool = True
    voice: bool = True
    record: bool = True
    recordings_dir: str = "recordings"
    recordings_max_gb: float = 20.0
    metrics: bool = True                  # GET /metrics (Prometheus)
    metrics_public: bool = False          # with auth set: /metrics without the login
    drain_s: float = 10.0                 # on SIGTERM/Ctrl-C: how long replies may finish

    def __post_init__(self) -> None:
        s = "app"
        if not self.host.strip():
            _fail(s, "host", "must not be empty")
        _check_range(s, "port", self.port, 1, 65535)
        if self.auth and (":" not in self.auth or not self.auth.split(":", 1)[0]
                          or not self.auth.split(":", 1)[1]):
            _fail(s, "auth", "expected USER:PASS with both parts non-empty")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            _fail(s, "ssl_certfile", "ssl_certfile and ssl_keyfile go together")
        _check_range(s, "max_sessions", self.max_sessions, 1, 64)
        if self.preset not in ("", "offline"):
            _fail(s, "preset", f"expected offline or nothing, got {self.preset!r}")
        if not self.recordings_dir.strip():
            _fail(s, "recordings_dir", "must not be empty")
        _check_range(s, "recordings_max_gb", self.recordings_max_gb, 0.01, 100_000)
        _check_range(s, "drain_s", self.drain_s, 0.0, 3600.0)


@dataclass(frozen=True)
class Config:
    engine: EngineConfig = field(default_factory=EngineConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    app: AppConfig = field(default_factory=AppConfig)


_SECTIONS = {"engine": EngineConfig, "speech": SpeechConfig, "app": AppConfig}


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce strings (environment, CLI) to the field's type; reject wrong types."""
    kind = type(f.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        _fail(section, f.name, f"expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            _fail(section, f.name, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            _fail(section, f.name, f"expected a number, got {value!r}")
        if kind is int:
            if number != int(number):
                _fail(section, f.name, f"expected a whole number, got {value!r}")
            return int(number)
        return number
    if kind is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            _fail(section, f.name, f"expected text, got {value!r}")
        return value
    return value


def build_config(*layers: Mapping[str, Any]) -> Config:
    """Merge nested ``{"engine": {...}, "speech": {...}, "app": {...}}`` layers, later wins."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for layer in layers:
        for section, values in layer.items():
            if section not in _SECTIONS:
                raise ValueError(f"{section}: unknown config section (expected engine, speech or app)")
            if not isinstance(values, Mapping):
                raise ValueError(f"{section}: expected a table of settings")
            fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
            for key, value in values.items():
                if section == "engine" and key == "max_pixels":    # the older name
                    key = "pixel_budget"
                if key not in fields:
                    raise ValueError(f"{section}.{key}: unknown setting")
                merged[section][key] = _coerce(section, fields[key], value)
    return Config(**{name: cls(**merged[name]) for name, cls in _SECTIONS.items()})


def parse_config_text(text: str, suffix: str) -> dict[str, Any]:
    """Parse a config file's text; ``suffix`` is ``.toml``, ``.yaml`` or ``.yml``."""
    if suffix == ".toml":
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file: invalid TOML ({e})") from None
    elif suffix in (".yaml", ".yml"):
        import yaml
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"config file: invalid YAML ({str(e).splitlines()[0]})") from None
    else:
        raise ValueError(f"config file: expected .toml, .yaml or .yml, got {suffix or 'no suffix'!r}")
    if not isinstance(data, dict):
        raise ValueError("config file: expected a table with engine/speech/app sections")
    return data


def env_layer(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``AURA_ENGINE_MODEL=...`` style variables as a config layer (unknown ones are errors)."""
    layer: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if not key.startswith("AURA_"):
            continue
        rest = key[5:].lower()
        section, _, name = rest.partition("_")
        if section not in _SECTIONS or not name:
            raise ValueError(f"{key}: unknown AURA_ variable (expected AURA_ENGINE_*, "
                             "AURA_SPEECH_* or AURA_APP_*)")
        layer.setdefault(section, {})[name] = value
    return layer
