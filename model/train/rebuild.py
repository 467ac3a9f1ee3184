"""``python -m model.train.rebuild SRC OUT``: train again what SRC's training record describes.

* Reads ``SRC/aura_train.json`` (written by ``python -m model.train``): one stage's
  settings, and in ``init`` the record of the checkpoint it started from, and so on.
* Runs the stages oldest first, each through ``python -m model.train``; stage k of n < k
  goes to ``OUT-stage-k`` beside OUT, the last one to ``OUT``. A finished stage is kept, so
  running the same command again after an interruption resumes where it stopped.
* ``--device`` and ``--workers`` apply to every stage (they change speed, not batches; a
  GPU's float rounding differs from a CPU's, so the weights are alike, not bit-equal).
* ``--scale F`` multiplies every stage's steps (a quick, shorter rebuild; tests use it).
* A missing or unreadable record, or a stage without settings: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REQUIRED = ("steps", "batch", "lr", "seed", "loss")
DEFAULTS = {"start_level": 0.0, "mix": "colours", "size": None}   # what records before these settings used


def stages(record: dict) -> list[dict]:
    """The chain of stage records, oldest first."""
    chain = []
    while isinstance(record, dict):
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"a stage of the record lacks {', '.join(missing)}")
        chain.append({**DEFAULTS, **record})
        record = record.get("init")
    if record is not None:
        raise ValueError(f"the record's first stage started from {record!r}, which has no record")
    return chain[::-1]


def argv_of(stage: dict, out: Path, init: Path | None, device: str, workers: int, scale: float) -> list[str]:
    argv = [str(out), "--steps", str(max(1, round(stage["steps"] * scale))), "--batch", str(stage["batch"]),
            "--lr", repr(stage["lr"]), "--seed", str(stage["seed"]), "--loss", stage["loss"],
            "--start-level", repr(stage["start_level"]), "--mix", stage["mix"],
            "--device", device, "--workers", str(workers)]
    if init is not None:
        argv += ["--init", str(init)]
    elif stage.get("size"):
        argv += ["--size", stage["size"]]
    return argv


def main(argv: list[str]) -> int:
    from model.train import __main__ as cli
    ap = argparse.ArgumentParser(prog="python -m model.train.rebuild", description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="a trained checkpoint folder with aura_train.json")
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    try:
        chain = stages(json.loads((args.src / "aura_train.json").read_text()))
    except (OSError, ValueError) as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    if not args.scale > 0:
        print("error: --scale must be > 0", file=sys.stderr)
        return 2
    init = None
    for k, stage in enumerate(chain, 1):
        out = args.out if k == len(chain) else args.out.with_name(f"{args.out.name}-stage-{k}")
        print(f"stage {k}/{len(chain)}: {stage['mix']} mix, {stage['loss']} loss, {stage['steps']} steps -> {out}",
              file=sys.stderr, flush=True)
        if not (out / "aura_train.json").exists():
            rc = cli.main(argv_of(stage, out, init, args.device, args.workers, args.scale))
            if rc:
                return rc
        init = out
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
