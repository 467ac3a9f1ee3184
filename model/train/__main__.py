"""``python -m model.train OUT_DIR``: build and train the tiny AURA of the colour world.

* Writes an untrained checkpoint into OUT_DIR (model/train/checkpoint.py) unless one is
  there; ``--init DIR`` copies a trained one instead, to train it further.
* Trains on the curriculum (model/train/recipe.py), with progress on stderr and a
  resumable state in OUT_DIR/train_state.pt (run the same command again to resume).
  ``--mix`` picks the episode kinds, ``--size`` the shape of a fresh model; ``--workers N``
  makes the batches in N processes ahead (the same batches, faster).
* Saves the weights in place, writes OUT_DIR/aura_train.json (the recipe's settings, and
  the --init checkpoint's) and removes the state.
* Bad arguments, or a folder that already holds a finished run: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse(argv):
    from model.train.recipe import MIXES
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--loss", choices=("balanced", "ce"), default="balanced")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    ap.add_argument("--start-level", type=float, default=0.0,
                    help="curriculum level to start at, 0..1 (1: long streams from the first step)")
    ap.add_argument("--mix", choices=tuple(MIXES), default="colours",
                    help="episode kinds (model/train/recipe.py MIXES)")
    ap.add_argument("--size", choices=("small", "wide"), default="small",
                    help="model shape for a fresh run (model/train/checkpoint.py SIZES)")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes that make batches ahead (0: in the training process)")
    ap.add_argument("--init", type=Path, metavar="DIR",
                    help="start from this trained checkpoint's weights instead of random ones")
    return ap.parse_args(argv)


def run(args) -> Path:
    import torch
    from transformers import AutoTokenizer, AutoVideoProcessor, Qwen3VLForConditionalGeneration
    from model.pixels import ChunkPixels
    from model.prompt import Layout, Specials
    from model.train import checkpoint
    from model.train.batch import prepare
    from model.train.prefetch import Prefetch
    from model.train.recipe import Curriculum
    from model.train.trainer import TrainConfig, stderr_progress, train
    from app.config import EngineConfig
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device)
    out = args.out_dir
    if not (out / "config.json").exists():
        if args.init:
            checkpoint.copy_weights(args.init, out)
        else:
            checkpoint.init(out, seed=args.seed, size=checkpoint.SIZES[args.size])
    tok = AutoTokenizer.from_pretrained(out)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    engine = EngineConfig(model=str(out), max_pixels=checkpoint.MAX_PIXELS)
    layout = Layout.for_config(tok, Specials.from_tokenizer(tok), engine)
    cpu_prep = ChunkPixels(AutoVideoProcessor.from_pretrained(out), checkpoint.MAX_PIXELS, "cpu")
    merge = hf.config.vision_config.spatial_merge_size

    def grid_of(frames):
        _, h, w = cpu_prep.grid_for(*frames[0].shape[:2])
        return h // merge, w // merge
    source = Curriculum(layout, grid_of, cfg.steps, cfg.batch, cfg.seed, args.loss,
                        start_level=args.start_level, mix=args.mix)
    if args.workers:     # forked before CUDA starts; the workers make the pixel rows on the CPU
        with Prefetch(lambda step: prepare(cpu_prep, source(step)), args.workers) as ahead:
            losses = train(hf, cpu_prep, ahead, cfg, stderr_progress, state_dir=out)
    else:
        prep = cpu_prep if args.device == "cpu" else ChunkPixels(
            AutoVideoProcessor.from_pretrained(out), checkpoint.MAX_PIXELS, args.device)
        losses = train(hf, prep, source, cfg, stderr_progress, state_dir=out)
    checkpoint.save(hf, out)
    (out / "train_state.pt").unlink(missing_ok=True)
    (out / "aura_train.json").write_text(json.dumps(
        {"recipe": "python -m model.train", "steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr,
         "seed": cfg.seed, "loss": args.loss, "start_level": args.start_level, "mix": args.mix,
         "size": args.size if args.init is None else None, "device": args.device,
         "init": _init_recipe(args.init), "final_loss": sum(losses[-50:]) / len(losses[-50:])}))
    return out


def _init_recipe(init: Path | None):
    """The recipe the --init checkpoint was trained with (so the chain is on record)."""
    if init is None:
        return None
    f = init / "aura_train.json"
    return json.loads(f.read_text()) if f.is_file() else str(init)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.steps < 1 or args.batch < 1 or not args.lr > 0 or args.threads < 1 or args.workers < 0 \
            or not 0 <= args.start_level <= 1:
        print("error: --steps, --batch, --threads must be >= 1, --workers >= 0, --lr > 0, "
              "--start-level in [0, 1]", file=sys.stderr)
        return 2
    if args.out_dir.exists() and not args.out_dir.is_dir():
        print(f"error: {args.out_dir} exists and is not a directory", file=sys.stderr)
        return 2
    if (args.out_dir / "aura_train.json").exists():
        print(f"error: {args.out_dir} already holds a trained model; give a new folder", file=sys.stderr)
        return 2
    if args.init is not None and not (args.init / "model.safetensors").is_file():
        print(f"error: --init {args.init} holds no model.safetensors", file=sys.stderr)
        return 2
    if args.device != "cpu" and not args.device.startswith("cuda"):
        print("error: --device must be cpu or cuda[:N]", file=sys.stderr)
        return 2
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
