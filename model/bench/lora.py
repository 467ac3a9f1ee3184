"""Fine-tuning cost (issue 17, item 3): a LoRA step on the 8B shape with the silent-speech
balanced loss on one 30-chunk sample.

    python -m model.bench.lora --out F.json [--chunks 30] [--steps 4] [--rank 16]
    python -m model.bench.lora --tiny --device cpu --chunks 3 --frame-size 64x64 --out /tmp/l.json

Contract:
* Builds the random-weight Qwen3-VL in the 8B shape (``--config``; bf16 on CUDA) with the
  engine's tokenizer, layout and pixel path (``EngineConfig`` defaults), and one training
  sample the way ``model.train`` builds them (``samples.build_samples``): ``--chunks``
  1-s chunks of two ``--frame-size`` frames, silent except a spoken answer to a question
  in the middle and on the last chunk; the sample anchored at the last answer has the
  whole window (protocol section 5a), supervised by ``loss.balanced_loss``.
* Wraps the language model's projections (q, k, v, o, gate, up, down of every layer) in
  peft LoRA adapters (``--rank``, alpha = 2 x rank, no dropout); everything else is
  frozen; gradient checkpointing on the text layers (``--no-checkpointing`` to switch it
  off); AdamW on the adapters. Times ``--steps`` steps (after ``--warmup``) of
  ``model.train.batch.forward`` (vision tower included) + loss + backward + clip + step.
* Reports: sample / visual / supervised tokens, step ms p50 and max, tokens/s (sample
  tokens per second of step), peak GPU memory (allocated, reserved), trainable parameters,
  and ``minutes_per_epoch_for_moments`` = ``--moments`` (200) annotated moments x one such
  sample each (batch 1) x the step time. JSON written at the end or on failure (errors);
  bad arguments: one line, exit code 2. peft is imported here only (``pip install peft``;
  the GPU image installs it from the carried wheel).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from model.bench.engine import add_model_args, bad_args
from model.bench.stats import pct

LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def records(n_chunks: int, h: int, w: int):
    """``n_chunks`` ChunkRecords of two random frames: a question answered in the middle
    and on the last chunk, silent otherwise."""
    import numpy as np

    from model.train.tasks import ChunkRecord
    rng = np.random.default_rng(0)
    out = []
    for k in range(n_chunks):
        frames = tuple(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
        asked = k in (n_chunks // 2, n_chunks - 1)
        out.append(ChunkRecord(frames, float(k), k + 1.0,
                               "What colour is the background?" if asked else None,
                               "The background is red." if asked else None))
    return out


def run(a) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from model.bench.engine import engine_for, env_info
    from model.prompt import Layout
    from model.train.batch import forward
    from model.train.loss import IGNORE, balanced_loss
    from model.train.samples import Windows, build_samples
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    res = {"mode": "lora", **env_info(dev), "args": {k: v for k, v in vars(a).items() if k != "engine_overrides"}}
    t0 = time.perf_counter()
    model = engine_for(a.config, tiny=a.tiny, device=a.device, overrides=a.engine_overrides)
    hf, cfg = model.hf, model.cfg
    # the engine's tokenizer (model.tiny's) names the video pad; the training forward finds
    # the pads by the model config's id, so the random model takes the tokenizer's
    hf.config.video_token_id = model.specials.video_pad
    layout = Layout.for_config(model.tokenizer, model.specials, cfg)
    prep = model.vision.prep
    merge = hf.config.vision_config.spatial_merge_size

    def grid_of(frames):
        _, gh, gw = prep.grid_for(*frames[0].shape[:2])
        return gh // merge, gw // merge
    h, w = a.frame_size
    sample = build_samples(records(a.chunks, h, w), layout, grid_of, Windows.for_config(cfg), "balanced")[-1]
    hf.requires_grad_(False)
    lcfg = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    peft_model = get_peft_model(hf, lcfg)        # adapters go into hf's own modules
    if a.checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf.train()
    params = [p for p in hf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    res.update(setup_s=round(time.perf_counter() - t0, 1),
               sample_tokens=len(sample), visual_tokens=int((sample.ids == hf.config.video_token_id).sum()),
               supervised_tokens=int((sample.labels != IGNORE).sum()), window_chunks=len(sample.chunks),
               trainable_params_m=sum(p.numel() for p in params) / 1e6,
               trainable_tensors=len(params),
               total_params_m=sum(p.numel() for p in hf.parameters()) / 1e6,
               lora={"rank": a.rank, "alpha": 2 * a.rank, "targets": LORA_TARGETS, "peft": _version("peft")},
               gradient_checkpointing=a.checkpointing, dtype=str(next(hf.parameters()).dtype))
    print(f"sample: {len(sample)} tokens ({res['visual_tokens']} visual, {res['supervised_tokens']} supervised), "
          f"{res['trainable_params_m']:.2f} M trainable in {len(params)} tensors", flush=True)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        sync()
        t = time.perf_counter()
        logits, labels, weights = forward(hf, prep, [sample])
        loss = balanced_loss(logits, labels, weights)
        del logits
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        sync()
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
        print(f"  step {step + 1}/{a.warmup + a.steps}: {(time.perf_counter() - t) * 1000:.0f} ms, "
              f"loss {losses[-1]:.4f}", flush=True)
    step_s = pct(times, 0.5)
    res.update(step_ms_p50=step_s * 1000, step_ms_max=max(times) * 1000, steps_timed=len(times), losses=losses,
               tokens_per_s=len(sample) / step_s, moments=a.moments,
               minutes_per_epoch_for_moments=a.moments * step_s / 60,
               minutes_note=f"{a.moments} annotated moments = {a.moments} samples like this one, batch 1, "
                            "one epoch (several epochs multiply it)")
    if cuda:
        res.update(mem_allocated_peak_gb=torch.cuda.max_memory_allocated(dev) / 1e9,
                   mem_reserved_peak_gb=torch.cuda.max_memory_reserved(dev) / 1e9)
    del peft_model
    return res


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not (w.isdigit() and h.isdigit()) or int(w) < 32 or int(h) < 32:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT of at least 32x32, got {text!r}")
    return int(h), int(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.bench.lora", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--frame-size", type=_size, default=(480, 640), metavar="WxH")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--moments", type=int, default=200)
    ap.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    add_model_args(ap)
    a = ap.parse_args(argv)
    own = None
    if a.chunks < 2 or a.rank < 1 or a.steps < 1 or a.warmup < 0 or a.moments < 1:
        own = "--chunks must be >= 2, --rank, --steps and --moments >= 1, --warmup >= 0"
    failed = bad_args(a, own)
    if failed:
        return failed
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = run(a)
        res["errors"] = []
    except Exception:
        traceback.print_exc()
        res = {"mode": "lora", "errors": [traceback.format_exc(limit=8)]}
    out.write_text(json.dumps(res, indent=1, default=float), encoding="utf-8")
    if not res["errors"]:
        print(f"LoRA step {res['step_ms_p50']:.0f} ms on {res['sample_tokens']} tokens: {res['tokens_per_s']:.0f} "
              f"tokens/s; {res['minutes_per_epoch_for_moments']:.1f} min per epoch of {a.moments} moments; "
              f"peak {res.get('mem_allocated_peak_gb', 0):.1f} GB allocated", flush=True)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
