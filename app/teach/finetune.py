"""``launch.py finetune``: a LoRA adapter from reviewed recordings, and its report.

Contract: ``finetune(config, sources, out_dir, opts, progress) -> dict`` (the report)
* ``sources``: recording folders, or folders holding recordings; every recording with notes
  is used (those without notes too, when named directly: they keep the model as it was).
* Samples: app/teach/samples.py (AURA's stream structuring and windows, one sample per
  answer, notes replacing what the model did). Training: model/train/trainer.py with the
  silent-speech balanced loss on a PEFT LoRA (model/adapter.py) over ``config.engine.model``
  (or continuing ``config.engine.adapter``). Samples that carry a note are drawn as often
  as all the others together, so a handful of notes is learnt in a few hundred steps.
* Progress lines (step, loss, time left) go to ``progress``; the trainer's state sits in
  ``out_dir/state`` so running the same command again resumes; ``opts.seed`` seeds it all.
* Writes ``out_dir``: the PEFT adapter (adapter_config.json, adapter_model.safetensors),
  ``report.json`` + ``report.md`` (settings, samples/s, per note the decision before and
  after) and ``loss.png``. "After" comes from replaying each recording with the adapter
  merged (app/recording/rerun.py; its comparison lands in ``out_dir/replays/<id>``).
* Bad input (no notes, no video, an unknown base, bad numbers) raises ``ValueError`` with
  one line before any training.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from app.config import Config
from app.recording import annotations as notes


@dataclass(frozen=True)
class FinetuneOptions:
    steps: int | None = None      # None: from epochs, else DEFAULT_STEPS
    epochs: float | None = None   # passes over the samples (steps = epochs * samples / batch)
    lr: float = 1e-2
    rank: int = 8
    batch: int = 3
    hold_out: float = 0.0         # fraction of the notes kept out of training, measured on
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError("--steps must be >= 1")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError("--epochs must be > 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("--lr must be > 0")
        if not 1 <= self.rank <= 256:
            raise ValueError("--rank must be between 1 and 256")
        if self.batch < 1:
            raise ValueError("--batch must be >= 1")
        if not 0.0 <= self.hold_out < 1.0:
            raise ValueError("--hold-out must be a fraction in [0, 1)")


DEFAULT_STEPS = 60      # fixed 3 of 3 notes on a tiny colour model (docs/recording.md)


def find_recordings(sources: list[Path]) -> list[Path]:
    """Recording folders named, and the annotated recordings inside folders named."""
    found: list[Path] = []
    for src in map(Path, sources):
        if (src / "events.jsonl").is_file():
            found.append(src)
        elif src.is_dir():
            found += sorted(p for p in src.iterdir() if (p / notes.FILE).is_file() and notes.load(p))
        else:
            raise ValueError(f"{src}: no such recording or folder")
    if not found:
        raise ValueError("no recordings found in " + ", ".join(map(str, sources)))
    return list(dict.fromkeys(found))


def _held_out(recs: list[Path], fraction: float, seed: int) -> dict[str, set[int]]:
    every = [(r.name, a.n) for r in recs for a in notes.load(r)]
    k = int(round(fraction * len(every)))
    chosen = random.Random(seed).sample(every, k) if k else []
    out: dict[str, set[int]] = {}
    for name, n in chosen:
        out.setdefault(name, set()).add(n)
    return out


def _check(recs: list[Path]) -> None:
    if not any(notes.load(r) for r in recs):
        raise ValueError("no annotations in " + ", ".join(r.name for r in recs) +
                         ": add some in the Review tab or with `launch.py annotate`")
    for r in recs:
        video = r / "video.mp4"
        if not video.is_file() or video.stat().st_size == 0:
            raise ValueError(f"{r}: the recording has no video, so there is nothing to learn from")


def finetune(config: Config, sources: list[Path], out_dir: Path, opts: FinetuneOptions,
             progress: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from app.teach import samples as teach
    from app.teach.report import write_report
    from model.adapter import attach
    from model.prompt import Layout
    from model.train.samples import Windows
    from model.train.trainer import TrainConfig, train
    from model.vlm import AuraModel

    recs = find_recordings(sources)
    _check(recs)
    out_dir = Path(out_dir)
    if (out_dir / "report.json").exists():
        raise ValueError(f"{out_dir} already holds a finished adapter; give a new folder")
    held = _held_out(recs, opts.hold_out, opts.seed)
    streams, moments = [], []
    for r in recs:
        s, m = teach.recording_streams(r, held.get(r.name, set()))
        for x in m:
            x.stream = x.stream + len(streams) if x.stream >= 0 else -1
        streams += s
        moments += m
    engine = replace(config.engine, backend="reference", adapter="")
    model = AuraModel.load(engine, progress, sessions=1)
    hf, prep = model.hf, model.vision.prep
    layout = Layout.for_config(model.tokenizer, model.specials, engine)
    merge = hf.config.vision_config.spatial_merge_size

    def grid_of(frames):
        _, h, w = prep.grid_for(*frames[0].shape[:2])
        return h // merge, w // merge
    samples, focus = teach.build(streams, moments, layout, grid_of, Windows.for_config(engine))
    if not any(focus):
        raise ValueError("no training sample shows a note (all held out, or a 'stayed silent' note "
                         "with no later answer in its window)")
    steps = opts.steps or (math.ceil(opts.epochs * len(samples) / opts.batch) if opts.epochs else DEFAULT_STEPS)
    # notes are rare: draw the samples that carry one as often as all the others together
    others = sum(1 for f in focus if not f)
    repeat = max(1, round(others / max(1, sum(focus))))
    pool = [s for s, f in zip(samples, focus) for _ in range(repeat if f else 1)]
    progress(f"{len(samples)} samples from {len(recs)} recording(s), {sum(focus)} carry a note "
             f"(drawn x{repeat}); {steps} steps of {opts.batch}")
    torch.manual_seed(opts.seed)
    wrapped = attach(hf, opts.rank, adapter_dir=config.engine.adapter or None)
    device = "cuda" if model.device.startswith("cuda") else "cpu"
    tcfg = TrainConfig(steps=steps, batch=opts.batch, lr=opts.lr, warmup=max(1, steps // 10),
                       seed=opts.seed, device=device, log_every=max(1, min(10, steps // 10)),
                       save_every=max(1, min(50, steps)))
    state = out_dir / "state"
    state.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    losses = train(hf, prep, pool, tcfg, progress, state_dir=state)
    seconds = time.perf_counter() - t0
    wrapped.save_pretrained(str(out_dir))
    (state / "train_state.pt").unlink(missing_ok=True)
    state.rmdir()
    settings = {"base": config.engine.model, "continued_from": config.engine.adapter or None,
                **{k: v for k, v in asdict(opts).items()}, "steps": steps, "warmup": tcfg.warmup,
                "loss": "balanced", "samples": len(samples), "samples_with_notes": sum(focus),
                "note_draw_repeat": repeat, "recordings": [r.name for r in recs]}
    del model, wrapped, hf
    settings["silent_kept"] = _after(config, recs, out_dir, moments, progress)
    return write_report(out_dir, settings, losses, seconds, steps * opts.batch, moments)


def _after(config: Config, recs: list[Path], out_dir: Path, moments, progress) -> list[int]:
    """Each recording replayed with the adapter merged: the decision at every note's chunk.
    Returns [kept, total]: the steps silent in the recording and without a note that the
    adapter leaves silent (what it must not break)."""
    from app.recording.library import read_events
    from app.recording.rerun import replay_recording
    adapted = replace(config, engine=replace(config.engine, adapter=str(out_dir)))
    kept = [0, 0]
    for r in recs:
        result = replay_recording(adapted, r, out_dir / "replays" / r.name, progress)
        events = read_events(out_dir / "replays" / r.name / "events.jsonl")
        noted = {m.note.chunk for m in moments if m.recording == r.name}
        for m in moments:
            if m.recording == r.name:
                m.after = notes.moment(events, m.note.chunk)
        before = [e for e in read_events(r / "events.jsonl") if e.get("type") == "step"
                  and e.get("decision") == "silent" and e.get("chunk_index") not in noted]
        woke = {c["chunk"] for c in result["steps"]["changed"]}
        kept[0] += sum(1 for e in before if e.get("chunk_index") not in woke)
        kept[1] += len(before)
    return kept


def fixed(kind: str, decision: str | None) -> bool:
    """Does a decision do what a note of this kind asks?"""
    return decision == ("silent" if kind == "silent" else "speak")


def report_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
