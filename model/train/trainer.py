"""A seeded plain-torch trainer: AdamW, warmup + cosine schedule, gradient clipping,
progress on stderr, resumable checkpoints, any device.

Contract:
* ``TrainConfig``: frozen, validated (``ValueError`` naming the field).
* ``train(hf_model, prep, samples, cfg, progress=None, state_dir=None) -> list[float]``
  (the loss of each step). ``samples`` is a list of ``samples.Sample`` (batches drawn with
  the seeded generator) or a callable ``step -> list[Sample]`` (a generated, curriculum
  stream of batches; it must be deterministic in ``step`` for resuming to be exact).
  ``prep`` is the engine's ``model.pixels.ChunkPixels`` for the model's video processor.
* ``progress(line)`` gets "step S/T loss L lr R elapsed E left ETA" every ``log_every``
  steps (``stderr_progress`` prints it to stderr).
* With ``state_dir``, every ``save_every`` steps the model, optimizer, step and RNG states
  go to ``state_dir/train_state.pt`` (atomically); a later call with the same config
  resumes from there. Weights train in float32.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from model.train.batch import forward
from model.train.loss import balanced_loss

STATE = "train_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch: int = 8
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 30
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10
    save_every: int = 100

    def __post_init__(self):
        for name, lo in (("steps", 1), ("batch", 1), ("warmup", 0), ("log_every", 1), ("save_every", 1)):
            if getattr(self, name) < lo:
                raise ValueError(f"TrainConfig.{name} must be >= {lo}")
        for name in ("lr", "clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("TrainConfig.min_lr_ratio must be in [0, 1]")
        if self.weight_decay < 0:
            raise ValueError("TrainConfig.weight_decay must be >= 0")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"TrainConfig.device must be cpu or cuda[:N], got {self.device!r}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def _batches(samples, cfg: TrainConfig) -> Callable[[int], list]:
    if callable(samples):
        return samples
    if not samples:
        raise ValueError("train: no samples")

    def draw(step: int) -> list:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        return [samples[rng.randrange(len(samples))] for _ in range(cfg.batch)]
    return draw


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(hf, prep, samples, cfg: TrainConfig, progress: Callable[[str], None] | None = None,
          state_dir: Path | None = None) -> list[float]:
    say = progress or (lambda _line: None)
    torch.manual_seed(cfg.seed)
    hf.to(cfg.device, torch.float32).train()
    params = [p for p in hf.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    draw = _batches(samples, cfg)
    start, losses = 0, []
    path = Path(state_dir) / STATE if state_dir is not None else None
    if path is not None and path.exists():
        st = torch.load(path, map_location=cfg.device, weights_only=False)
        if {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "device"} != st["config"]:
            raise ValueError(f"{path}: saved by a different TrainConfig; delete it to start over")
        hf.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        start, losses = st["step"], st["losses"]
        torch.set_rng_state(st["rng"])
        say(f"resumed at step {start}/{cfg.steps}")
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        logits, labels, weights = forward(hf, prep, draw(step))
        loss = balanced_loss(logits, labels, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        losses.append(loss.item())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rate = (time.perf_counter() - t0) / (done - start)
            recent = losses[-cfg.log_every:]
            say(f"step {done}/{cfg.steps} loss {sum(recent) / len(recent):.4f} lr {cfg.lr_at(step):.2e} "
                f"elapsed {_fmt(time.perf_counter() - t0)} left {_fmt(rate * (cfg.steps - done))}")
        if path is not None and (done % cfg.save_every == 0 or done == cfg.steps):
            _save(path, {"model": hf.state_dict(), "optim": opt.state_dict(), "step": done,
                         "losses": losses, "rng": torch.get_rng_state(),
                         "config": {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "device"}})
    hf.eval()
    return losses
