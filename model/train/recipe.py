"""The recipe of the shipped tiny AURA: a curriculum of generated streams -> batches.

Contract:
* ``Curriculum(layout, grid_of, steps, batch, seed, loss, mix=...)`` is a callable
  ``step -> list[Sample]``, deterministic in ``step``: fresh episodes (``tasks.episode``) per
  step, cut into chunks like replay, unrolled (``samples.build_samples``), ``batch`` samples.
* Stream length and question-to-event gap grow linearly to the mix's longest stream
  (``MAX_S``, else ``MAX_STREAM_S``) and ``MAX_GAP_S`` over the first ``RAMP`` of the steps;
  ``start_level`` (0..1) starts the ramp part-way.
* ``MIXES`` name the episode kinds and their shares. The shipped chain is ``status_snap``
  (short streams), ``status_long`` (streams to ~100 s, the waiting anywhere), ``every_long``
  (adds every-change requests and "Nothing." status answers), then ``pre_long`` (adds
  colour questions before the requests), twice (the fifth stage at half the lr). The
  others (``colours``, ``drill``, ``drill2``, ``drill3``, ``snap``, ``check``, and
  ``final_long``, a fifth stage not kept) are the runs of docs/training.md.
"""
from __future__ import annotations

import numpy as np

from model.train import tasks
from model.train.samples import Windows, build_samples

MIXES = {"colours": (("qa", 0.25), ("alert", 0.5), ("negative", 0.25)),
         "drill": (("qa", 0.15), ("chase", 0.4), ("miss", 0.25), ("alert", 0.1), ("negative", 0.1)),
         "drill2": (("qa", 0.15), ("chase", 0.2), ("chase_late", 0.2), ("miss", 0.1), ("miss_late", 0.15),
                    ("alert", 0.1), ("negative", 0.1)),
         "drill3": (("qa", 0.15), ("chase", 0.1), ("chase_any", 0.3), ("miss", 0.05), ("miss_any", 0.15),
                    ("alert", 0.15), ("negative", 0.1)),
         "snap": (("qa", 0.1), ("chase_snap", 0.55), ("miss_snap", 0.35)),
         "check": (("qa", 0.1), ("check", 0.3), ("chase_snap", 0.35), ("miss_snap", 0.25)),
         "status_snap": (("qa", 0.15), ("chase_snap", 0.15), ("miss_snap", 0.1), ("status_chase_snap", 0.35),
                         ("status_miss_snap", 0.25)),
         "status_long": (("qa", 0.15), ("chase", 0.05), ("status_chase", 0.05), ("chase_any", 0.15),
                         ("status_chase_any", 0.15), ("miss_any", 0.1), ("status_miss_any", 0.05), ("alert", 0.1),
                         ("status_alert", 0.05), ("negative", 0.1), ("status_chase_snap", 0.05)),
         "every_long": (("qa", 0.1), ("every", 0.2), ("idle_qa", 0.05), ("idle_alert", 0.05), ("idle_chase_any", 0.05),
                        ("chase_any", 0.1), ("status_chase_any", 0.1), ("status_chase", 0.05), ("miss_any", 0.1),
                        ("status_miss_any", 0.05), ("alert", 0.05), ("negative", 0.05), ("status_chase_snap", 0.05)),
         "pre_long": (("qa", 0.05), ("every", 0.15), ("idle_qa", 0.05), ("idle_alert", 0.05), ("pre_chase_any", 0.15),
                      ("pre_miss_any", 0.05), ("pre_chase_snap", 0.05), ("pre_status_chase", 0.05), ("pre_alert", 0.05),
                      ("status_chase_any", 0.1), ("chase_any", 0.05), ("miss_any", 0.05), ("alert", 0.05),
                      ("negative", 0.05), ("status_chase_snap", 0.05)),
         "final_long": (("qa", 0.05), ("every", 0.1), ("idle_qa", 0.03), ("idle_alert", 0.05), ("alert", 0.12),
                        ("pre_alert", 0.12), ("status_alert", 0.06), ("negative", 0.08), ("pre_negative", 0.05),
                        ("chase_any", 0.05), ("pre_chase_any", 0.08), ("status_chase_any", 0.06), ("miss_any", 0.05),
                        ("pre_miss_any", 0.05), ("status_chase_snap", 0.05))}
MAX_S = {"check": 30.0, "status_snap": 30.0, "final_long": 90.0}    # a mix's longest stream (default MAX_STREAM_S)
MIN_STREAM_S, MAX_STREAM_S = 10.0, 70.0
MIN_GAP_S, MAX_GAP_S = 3.0, 25.0
RAMP = 0.6


class Curriculum:
    def __init__(self, layout, grid_of, steps: int, batch: int, seed: int = 0, loss: str = "balanced",
                 windows: Windows = Windows(), start_level: float = 0.0, mix: str = "colours"):
        if mix not in MIXES:
            raise ValueError(f"Curriculum: mix must be one of {sorted(MIXES)}, got {mix!r}")
        self.layout, self.grid_of, self.steps, self.batch = layout, grid_of, steps, batch
        self.seed, self.loss, self.windows, self.start_level = seed, loss, windows, start_level
        self.mix, self.max_s = MIXES[mix], MAX_S.get(mix, MAX_STREAM_S)

    def level(self, step: int) -> float:
        return min(1.0, self.start_level + step / max(1.0, RAMP * self.steps))

    def __call__(self, step: int) -> list:
        rng = np.random.default_rng([self.seed, step])
        lv = self.level(step)
        kinds, p = zip(*self.mix)
        out: list = []
        while len(out) < self.batch:
            kind = kinds[rng.choice(len(kinds), p=p)]
            duration = float(rng.uniform(MIN_STREAM_S, MIN_STREAM_S + lv * (self.max_s - MIN_STREAM_S)))
            gap = MIN_GAP_S + lv * (MAX_GAP_S - MIN_GAP_S)
            world, asks = tasks.episode(rng, kind, duration, max_gap_s=gap)
            size = tasks.SIZES[rng.integers(len(tasks.SIZES))]
            records = tasks.chunk_stream(world, asks, size=size, jitter_seed=int(rng.integers(1 << 30)))
            samples = build_samples(records, self.layout, self.grid_of, self.windows, self.loss)
            rng.shuffle(samples)
            out.extend(samples[:max(1, self.batch // 4)])
        return out[:self.batch]
