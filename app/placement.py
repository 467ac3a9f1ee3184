"""Where each model runs: automatic placement by GPU count, explicit overrides, VLM splits.

Contract (pure, no torch import): ``plan_placement(n_gpus, vlm, asr, tts)`` turns the
configured device strings (``auto``, ``cpu``, ``cuda``, ``cuda:N`` and for the VLM also a
comma list ``cuda:1,cuda:2`` to split it) into a ``Placement``. Automatic rules, the
authors' layout: no GPU -> everything on the CPU with a warning; one GPU -> everything
on cuda:0; two or more -> speech (ASR, TTS) on cuda:0 and the VLM on cuda:1. A device
that does not exist is a ``ValueError`` naming the option. A split VLM's device map
itself is the engine's business (model/split.py).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    vlm: tuple[str, ...]          # one device, or several for a split VLM
    asr: str
    tts: str
    warning: str = ""

    @property
    def vlm_primary(self) -> str:
        return self.vlm[0]


def _check_one(option: str, value: str, n_gpus: int) -> str:
    value = value.strip()
    if value == "cuda":
        value = "cuda:0"
    if value == "cpu":
        return value
    if not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ValueError(f"{option}: expected auto, cpu, cuda or cuda:N, got {value!r}")
    index = int(value[5:])
    if index >= n_gpus:
        have = f"{n_gpus} GPU{'s' if n_gpus != 1 else ''}" if n_gpus else "no GPU"
        raise ValueError(f"{option}: {value} requested but this machine has {have}")
    return value


def plan_placement(n_gpus: int, vlm: str = "auto", asr: str = "auto", tts: str = "auto") -> Placement:
    if n_gpus < 0:
        raise ValueError("n_gpus must be >= 0")
    if n_gpus == 0:
        auto_vlm, auto_speech = "cpu", "cpu"
    elif n_gpus == 1:
        auto_vlm, auto_speech = "cuda:0", "cuda:0"
    else:
        auto_vlm, auto_speech = "cuda:1", "cuda:0"
    if vlm == "auto":
        vlm_devices: tuple[str, ...] = (auto_vlm,)
    else:
        vlm_devices = tuple(_check_one("--vlm-device", part, n_gpus) for part in vlm.split(","))
        if len(vlm_devices) > 1 and "cpu" in vlm_devices:
            raise ValueError("--vlm-device: a split VLM must list GPUs only (cuda:N,cuda:M)")
        if len(set(vlm_devices)) != len(vlm_devices):
            raise ValueError("--vlm-device: each GPU may appear once in a split")
    asr_dev = auto_speech if asr == "auto" else _check_one("--asr-device", asr, n_gpus)
    tts_dev = auto_speech if tts == "auto" else _check_one("--tts-device", tts, n_gpus)
    warning = ""
    if "cpu" in vlm_devices:
        warning = ("No GPU in use for the VLM: it runs on the CPU, far slower than real time "
                   "for the 8B model (fine for --preset offline).")
    return Placement(vlm=vlm_devices, asr=asr_dev, tts=tts_dev, warning=warning)
