"""The benchmark's engine section: the real ``AuraSession`` (model/session.py) on the fast path.

Contract: ``run_engine_stream(hf_model, backend, vision, minutes, ...)`` builds an
``AuraModel`` around the benchmark's random-weight model (the tokenizer and video processor
come from the engine's own tiny checkpoint builder, ``model.tiny.build``: the 8B config has
no tokenizer; special ids only need to be below the vocabulary size), puts ``backend``
(a ``FastBackend``) and ``vision`` (a ``FastVision``) in it, and streams ``minutes`` of
1-s chunks of two random 640x480 RGB frames through ``session.step`` exactly as the
orchestrator does: the HF video processor on the CPU, the vision graph, the chunk append,
the decision, the assistant turn, a question every 30 s answered with up to
``max_new_tokens`` tokens, and ``session.maintain`` in the idle part of each second (the
engine's shadow cache for window cuts). Times are synchronised wall clock (ms).

Random weights choose "speak" at nearly every decision. Chunks without a question are held
to a 3-token assistant turn, the work of a silent turn: with ``allow_speak=False`` where the
session has it, else by cancelling the reply after its first token (the orchestrator's
barge-in path), which appends ``token <|im_end|> \n``.
Per step it also records, to explain the time: the engine's CPU pixel preparation (the HF
video processor, by timing ``vision.pixels``) and the Python garbage-collector pauses
(``gc.callbacks``).
"""
from __future__ import annotations

import gc
import inspect
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.events import ReplyStarted, StepDecision, VideoChunk
from model.bench import pct


def run_engine_stream(hf_model, backend, vision, *, minutes: float, idle_budget_ms: float = 600.0,
                      max_new_tokens: int = 12) -> dict:
    import transformers

    from app.config import EngineConfig
    from model.tiny import build
    from model.vlm import AuraModel
    t_build = time.perf_counter()
    tiny_dir = Path(tempfile.mkdtemp(prefix="aura-bench-tiny-"))
    build(tiny_dir, seed=0)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    vproc = transformers.AutoVideoProcessor.from_pretrained(tiny_dir)
    vproc.cap_pixels_per_frame = False
    dev = backend.device.type
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    cfg = EngineConfig(model=str(tiny_dir), device=dev, backend="fast", max_new_tokens=max_new_tokens)
    model = AuraModel(cfg, hf_model, tok, vproc, dev)
    model.backend = backend
    model.vision.fast = vision
    session = model.new_session("bench")
    rng = np.random.default_rng(0)
    frames = [tuple(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)) for _ in range(8)]
    build_s = time.perf_counter() - t_build
    has_allow = "allow_speak" in inspect.signature(session.step).parameters
    spent = {"pixels": 0.0, "gc": 0.0, "gc_t0": None}
    pixels = model.vision.pixels

    def timed_pixels(frames):
        t = time.perf_counter()
        try:
            return pixels(frames)
        finally:
            spent["pixels"] += (time.perf_counter() - t) * 1000

    def gc_timer(phase, _info):
        if phase == "start":
            spent["gc_t0"] = time.perf_counter()
        elif spent["gc_t0"] is not None:
            spent["gc"] += (time.perf_counter() - spent["gc_t0"]) * 1000
            spent["gc_t0"] = None
    model.vision.pixels = timed_pixels
    gc.callbacks.append(gc_timer)
    try:
        steps = _stream(session, frames, minutes, has_allow, spent, sync, idle_budget_ms, dev)
    finally:
        gc.callbacks.remove(gc_timer)
        session.close()
    silent = [s for s in steps if not s["q"]]
    ttft = [s["first_ms"] for s in steps if s["q"]]
    half = len(steps) // 2
    mem = [s["mem_gb"] for s in steps[1:]]
    chunk = [s["ms"] for s in silent]
    return {"driver": "model.session.AuraSession (engine branch) with FastBackend + FastVision",
            "setup_s": build_s, "chunks": len(steps), "questions": len(ttft),
            "chunk_step_p50_ms": pct(chunk, 0.5), "chunk_step_p90_ms": pct(chunk, 0.9),
            "chunk_step_p99_ms": pct(chunk, 0.99), "chunk_step_max_ms": max(chunk),
            "decision_p50_ms": pct([s["decision_ms"] for s in silent], 0.5),
            "pixels_cpu_p50_ms": pct([s["pixels_ms"] for s in silent], 0.5),
            "pixels_cpu_p99_ms": pct([s["pixels_ms"] for s in silent], 0.99),
            "chunk_step_minus_pixels_p50_ms": pct([s["ms"] - s["pixels_ms"] for s in silent], 0.5),
            "gc_ms_total_in_steps": sum(s["gc_ms"] for s in steps),
            "steps_with_gc_over_5ms": sum(s["gc_ms"] > 5 for s in steps),
            "question_ttft_p50_ms": pct(ttft, 0.5), "question_ttft_max_ms": max(ttft) if ttft else None,
            "idle_ms_max": max(s["idle_ms"] for s in steps),
            "step_plus_idle_ms_max": max(s["ms"] + s["idle_ms"] for s in steps),
            "context_tokens_max": max(s["context"] for s in steps),
            "mem_alloc_min_gb": min(mem), "mem_alloc_max_gb": max(mem),
            "mem_alloc_max_first_half_gb": max(mem[:half]), "mem_alloc_max_second_half_gb": max(mem[half - 1:]),
            "step_ms": [round(s["ms"], 2) for s in steps],
            "pixels_ms": [round(s["pixels_ms"], 2) for s in steps],
            "gc_ms": [round(s["gc_ms"], 2) for s in steps]}


def _stream(session, frames, minutes, has_allow, spent, sync, idle_budget_ms, dev) -> list[dict]:
    steps = []
    for k in range(int(minutes * 60)):
        q = "What is on the table right now?" if k % 30 == 15 else None
        kw = {}
        if q is None:
            kw = {"allow_speak": False} if has_allow else {"cancel": lambda: True}
        chunk = VideoChunk(t_s=k + 1.0, start_s=float(k), frames=frames[k % 8], index=k)
        sync()
        spent["pixels"] = spent["gc"] = 0.0
        t0 = time.perf_counter()
        first = decision = None
        for ev in session.step(chunk, q, **kw):
            if isinstance(ev, StepDecision):
                decision = ev
                if ev.decision == "silent":        # the first token (silent) is chosen here
                    first = (time.perf_counter() - t0) * 1000
            elif isinstance(ev, ReplyStarted) and first is None and q is not None:
                first = (time.perf_counter() - t0) * 1000
        sync()
        ms = (time.perf_counter() - t0) * 1000
        pix_ms, gc_ms = spent["pixels"], spent["gc"]
        t1 = time.perf_counter()
        session.maintain(idle_budget_ms / 1000)
        sync()
        steps.append({"q": q is not None, "ms": ms, "first_ms": first, "decision_ms": decision.step_ms,
                      "context": decision.context_tokens, "idle_ms": (time.perf_counter() - t1) * 1000,
                      "pixels_ms": pix_ms, "gc_ms": gc_ms,
                      "mem_gb": torch.cuda.memory_allocated() / 1e9 if dev == "cuda" else 0.0})
    return steps

