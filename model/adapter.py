"""LoRA adapters (PEFT) on the AURA model: attach one to train, merge one at load.

Contract:
* ``TARGETS``: the language model's attention and MLP projections (the vision tower and
  lm_head stay as they are).
* ``attach(hf, rank, alpha=None, dropout=0.0, adapter_dir=None) -> PeftModel``: a new
  trainable LoRA on ``hf`` (alpha defaults to 2 * rank), or, with ``adapter_dir``, that
  adapter loaded trainable (to continue training it). Only LoRA weights require grad; the
  layers are injected into ``hf`` itself, so code that drives ``hf`` trains the adapter.
* ``merge(hf, adapter_dir) -> hf``: the adapter's deltas added into the weights and the
  LoRA layers removed, so every backend (the fast one included) runs at its usual speed.
* ``check_dir(path) -> Path`` and ``describe(path) -> str`` (rank, targets): a folder that
  is not a PEFT LoRA adapter raises ``AdapterError`` (a ValueError) with one line.
"""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class AdapterError(ValueError):
    pass


def check_dir(path) -> Path:
    p = Path(path).expanduser()
    cfg = p / "adapter_config.json"
    if not p.is_dir() or not cfg.is_file():
        raise AdapterError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    try:
        info = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path}: unreadable adapter_config.json ({e})") from None
    if not isinstance(info, dict) or info.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: not a LoRA adapter (peft_type {info.get('peft_type')!r})")
    if not any((p / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(f"{path}: the adapter's weights (adapter_model.safetensors) are missing")
    return p


def describe(path) -> str:
    info = json.loads((check_dir(path) / "adapter_config.json").read_text(encoding="utf-8"))
    return f"LoRA rank {info.get('r')}, alpha {info.get('lora_alpha')}"


def _import_peft():
    try:
        import peft
    except ImportError:
        raise AdapterError("LoRA adapters need the peft package: pip install -r requirements.txt") from None
    return peft


def attach(hf, rank: int, alpha: float | None = None, dropout: float = 0.0, adapter_dir=None):
    peft = _import_peft()
    if adapter_dir is not None:
        return peft.PeftModel.from_pretrained(hf, str(check_dir(adapter_dir)), is_trainable=True)
    if rank < 1:
        raise AdapterError(f"the LoRA rank must be >= 1, got {rank}")
    cfg = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else 2 * rank),
                          lora_dropout=float(dropout), target_modules=TARGETS, bias="none")
    return peft.get_peft_model(hf, cfg)


def merge(hf, adapter_dir):
    peft = _import_peft()
    path = check_dir(adapter_dir)
    try:
        wrapped = peft.PeftModel.from_pretrained(hf, str(path))
    except (ValueError, RuntimeError, KeyError) as e:  # shapes or names of another base model
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise AdapterError(f"{adapter_dir}: does not fit this model ({why})") from None
    return wrapped.merge_and_unload().eval()
