"""The benchmark's engine section: the real ``AuraSession`` (model/session.py) on the fast path.

Contract: ``engine_model(hf_model, max_new_tokens=64) -> AuraModel`` wraps the benchmark's
random-weight model in the engine's ``AuraModel`` (the tokenizer and video processor come
from the engine's own tiny checkpoint builder, ``model.tiny.build``: the 8B config has no
tokenizer; special ids only need to be below the vocabulary size); the caller attaches a
backend (``model.attach_backend()`` as the loader does, or a ``FastBackend`` and
``FastVision`` of its own). ``run_engine_stream(model, minutes, ...)`` streams ``minutes``
of 1-s chunks of two random 640x480 RGB frames through ``session.step`` exactly as the
orchestrator does: frame preprocessing on the device, the vision graph, the chunk append
(with the previous turn's end folded in), the decision, a question every 30 s answered
with ``reply_tokens`` tokens (then cancelled: the barge-in path), and ``session.maintain``
in the idle part of each second (the shadow cache for window cuts). Chunks without a
question run with ``allow_speak=False`` (random weights would speak at every decision): a
silent turn, as most real steps are. Then it measures the engine's decode: silent chunks
until the context holds ``decode_min_context`` tokens, then ``decode_samples`` questions
answered to ``max_new_tokens``; ms per token = reply time / forwards. Times are
synchronised wall clock (ms); ``realtime=True`` paces chunks at one per second.
Per step it also records, to explain the time: the host time of the pixel preparation
(``vision.pixels``) and the Python garbage-collector pauses (``gc.callbacks``).
"""
from __future__ import annotations

import sys

import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.events import ReplyEnded, ReplyStarted, StepDecision, VideoChunk

from model.bench.stats import pct

QUESTION = "What is on the table right now?"


def engine_overrides(pairs) -> dict:
    """``["FIELD=VALUE", ...]`` -> EngineConfig overrides, coerced and validated as the app's
    config layers are (ValueError naming the field)."""
    from app.config import build_config
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"engine override {pair!r}: expected FIELD=VALUE")
        out[key.strip()] = value.strip()
    cfg = build_config({"engine": out}).engine
    return {k: getattr(cfg, k) for k in out}


def engine_model(hf_model, *, max_new_tokens: int = 64, overrides: dict | None = None):
    """``overrides``: other EngineConfig fields (e.g. a pixel budget), else the defaults."""
    import transformers

    from app.config import EngineConfig
    from model.tiny import build
    from model.vlm import AuraModel
    tiny_dir = Path(tempfile.mkdtemp(prefix="aura-bench-tiny-"))
    build(tiny_dir, seed=0)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    vproc = transformers.AutoVideoProcessor.from_pretrained(tiny_dir)
    vproc.cap_pixels_per_frame = False
    dev = str(next(hf_model.parameters()).device)
    cfg = EngineConfig(**{**(overrides or {}), "model": str(tiny_dir), "device": dev, "backend": "fast",
                          "max_new_tokens": max_new_tokens})
    return AuraModel(cfg, hf_model, tok, vproc, dev)


def add_model_args(ap) -> None:
    """The model options shared by the capacity and turn commands."""
    from model.bench.main import DEFAULT_CONFIG
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="Qwen3-VL config JSON (default: the 8B shape)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models in float32 (CPU smoke run)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--engine-set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="EngineConfig fields other than the defaults (e.g. a pixel budget)")


def model_args_error(a) -> str | None:
    """One line saying what is wrong with the model options, or None (``a.engine_overrides``
    holds the parsed ``--engine-set``)."""
    try:
        a.engine_overrides = engine_overrides(a.engine_set)
    except ValueError as e:
        return f"--engine-set: {e}"
    if a.device == "cpu" and not a.tiny:
        return "--device cpu needs --tiny (the 8B shape runs on a GPU)"
    if not a.tiny and not Path(a.config).is_file():
        return f"--config: no such file: {a.config}"
    return None


def bad_args(a, own: str | None = None) -> int | None:
    """Exit code 2 after printing the first problem (the benchmark's own check ``own``, then
    the model options), or None when the arguments are fine."""
    err = own or model_args_error(a)
    if err:
        print(err, file=sys.stderr)
        return 2
    return None


def record_error(bench, section: str) -> str:
    """Inside an ``except``: print the traceback, add it to ``bench.res["errors"]`` under
    ``section`` and return its last line (the exception, for a result row)."""
    import traceback
    traceback.print_exc()
    bench.res["errors"].append({"section": section, "error": traceback.format_exc(limit=6)})
    return traceback.format_exc(limit=1).splitlines()[-1]


def setup_or_record(bench) -> bool:
    """``bench.setup()``; on an exception, record it as the "setup" section, save the result
    file (``bench.save()``) and return False."""
    try:
        bench.setup()
        return True
    except Exception:
        record_error(bench, "setup")
        bench.save()
        return False


def env_info(device) -> dict:
    """Date (UTC), device name and versions for a result file."""
    import datetime
    import platform

    import transformers
    cuda = device.type == "cuda"
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}


def load_engine(config_path: str | None, *, tiny: bool, device: str, sessions: int,
                max_new_tokens: int | None = None, overrides: dict | None = None):
    """The random-weight model (the 8B shape from ``config_path``, or the tiny one in float32)
    in the engine as the app loads it (``engine_for`` then ``attach``)."""
    model = engine_for(config_path, tiny=tiny, device=device, max_new_tokens=max_new_tokens,
                       overrides=overrides)
    attach(model, sessions)
    return model


def engine_for(config_path: str | None, *, tiny: bool, device: str, max_new_tokens: int | None = None,
               overrides: dict | None = None):
    """``AuraModel`` around a random-weight Qwen3-VL built on ``device``, with the
    EngineConfig defaults (``max_new_tokens`` None keeps the default); no backend yet."""
    from app.config import EngineConfig
    from model.fast.tiny import build_qwen3vl, load_config, tiny_config
    if device.startswith("cuda:"):              # graphs, streams and Triton use the current device
        torch.cuda.set_device(torch.device(device))
    hf = build_qwen3vl(tiny_config() if tiny else load_config(config_path),
                       dtype=torch.float32 if tiny else torch.bfloat16, device=device, seed=0)
    return engine_model(hf, max_new_tokens=max_new_tokens or EngineConfig().max_new_tokens, overrides=overrides)


def attach(model, sessions: int) -> None:
    """The backend as ``AuraModel.load`` attaches it for ``sessions`` (a live and a shadow
    cache each, ``context_budget`` tokens per cache): on CUDA ``attach_backend()`` (graphs);
    on the CPU the same objects, eager."""
    from model.fast.backend import FastBackend
    from model.fast.vision import FastVision
    from model.prompt import Layout
    from model.vlm import context_budget
    model.sessions = max(1, int(sessions))
    if model.device.startswith("cuda"):
        model.attach_backend()
    else:
        budget = context_budget(model.cfg, Layout.for_config(model.tokenizer, model.specials, model.cfg))
        model.backend = FastBackend(model.hf, max_tokens=budget, pool_size=model.cache_pool_size)
        model.vision.fast = FastVision(model.hf, [], auto_prepare=True)


def cache_bytes(model) -> int:
    """Bytes of one preallocated KV cache of ``model`` (K and V, every layer)."""
    from model.prompt import Layout
    from model.vlm import context_budget
    c = model.hf.config.text_config
    per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * model.hf.dtype.itemsize
    return per_token * context_budget(model.cfg, Layout.for_config(model.tokenizer, model.specials, model.cfg))


class _Spent:
    """Host time in ``vision.pixels`` and in GC pauses since ``zero()`` (ms)."""

    def __init__(self, vision):
        self.pixels = self.gc = 0.0
        self._t0 = None
        self._vision, self._orig = vision, vision.pixels

        def timed(frames):
            t = time.perf_counter()
            try:
                return self._orig(frames)
            finally:
                self.pixels += (time.perf_counter() - t) * 1000
        vision.pixels = timed
        gc.callbacks.append(self._gc)

    def _gc(self, phase, _info):
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.gc += (time.perf_counter() - self._t0) * 1000
            self._t0 = None

    def zero(self) -> None:
        self.pixels = self.gc = 0.0

    def close(self) -> None:
        gc.callbacks.remove(self._gc)
        self._vision.pixels = self._orig


def _frames():
    rng = np.random.default_rng(0)
    return [tuple(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)) for _ in range(8)]


def run_engine_stream(model, *, minutes: float, idle_budget_ms: float = 600.0, reply_tokens: int = 12,
                      decode_samples: int = 3, decode_min_context: int = 14_000,
                      realtime: bool = False) -> dict:
    cuda = model.backend.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    session = model.new_session("bench")
    frames = _frames()
    spent = _Spent(model.vision)
    run = _Runner(session, frames, spent, sync, idle_budget_ms, cuda, realtime)
    try:
        steps = [run.step(k, QUESTION if k % 30 == 15 else None, reply_tokens) for k in range(int(minutes * 60))]
        decode = run.decode(len(steps), decode_samples, decode_min_context)
    finally:
        spent.close()
        session.close()
    return summarize(steps, decode)


class _Runner:
    def __init__(self, session, frames, spent, sync, idle_budget_ms, cuda, realtime):
        self.session, self.frames, self.spent, self.sync = session, frames, spent, sync
        self.idle_s, self.cuda, self.realtime = idle_budget_ms / 1000, cuda, realtime
        self.t_start = time.perf_counter()

    def step(self, k: int, question: str | None, reply_tokens: int | None) -> dict:
        calls = [0]

        def cancel():
            calls[0] += 1
            return reply_tokens is not None and calls[0] >= reply_tokens
        kw = {"cancel": cancel} if question else {"allow_speak": False}
        chunk = VideoChunk(t_s=k + 1.0, start_s=float(k), frames=self.frames[k % 8], index=k)
        self.sync()
        self.spent.zero()
        t0 = time.perf_counter()
        first = decision = reply = t_reply = None
        for ev in self.session.step(chunk, question, **kw):
            now = time.perf_counter()
            if isinstance(ev, StepDecision):
                decision = ev
                if ev.decision == "silent":        # the first token (silent) is chosen here
                    first = (now - t0) * 1000
            elif isinstance(ev, ReplyStarted):
                t_reply = now
                if first is None:
                    first = (now - t0) * 1000
            elif isinstance(ev, ReplyEnded):
                reply = (ev.n_tokens, (now - t_reply) * 1000)
        self.sync()
        ms = (time.perf_counter() - t0) * 1000
        pix_ms, gc_ms = self.spent.pixels, self.spent.gc
        t1 = time.perf_counter()
        self.session.maintain(self.idle_s)
        self.sync()
        idle_ms = (time.perf_counter() - t1) * 1000
        if self.realtime:
            time.sleep(max(0.0, self.t_start + k + 1.0 - time.perf_counter()))
        return {"q": question is not None, "ms": ms, "first_ms": first, "decision_ms": decision.step_ms,
                "context": decision.context_tokens, "idle_ms": idle_ms, "pixels_ms": pix_ms, "gc_ms": gc_ms,
                "reply": reply, "mem_gb": torch.cuda.memory_allocated() / 1e9 if self.cuda else 0.0}

    def decode(self, first: int, samples: int, min_context: int) -> list[dict]:
        """Questions answered to max_new_tokens once the context holds ``min_context``."""
        out: list[dict] = []
        max_new = self.session.cfg.max_new_tokens
        for k in range(first, first + 120):
            if len(out) >= samples:
                break
            ask = self.session.context_tokens >= min_context
            s = self.step(k, QUESTION if ask else None, None)
            if ask and s["context"] >= min_context and s["reply"] and s["reply"][0] >= 8:   # no cut
                n, ms = s["reply"]
                fed = n - 1 if n == max_new else n
                out.append({"context_tokens": s["context"], "tokens": n, "forwards": fed,
                            "reply_ms": ms, "ms_per_token": ms / fed})
        return out


def summarize(steps: list[dict], decode: list[dict]) -> dict:
    silent = [s for s in steps if not s["q"]]
    ttft = [s["first_ms"] for s in steps if s["q"]]
    half = len(steps) // 2
    mem = [s["mem_gb"] for s in steps[1:]] or [0.0]
    chunk = [s["ms"] for s in silent]
    return {"driver": "model.session.AuraSession with FastBackend + FastVision (turn ends folded, "
                      "pixels on the device)",
            "chunks": len(steps), "questions": len(ttft),
            "chunk_step_p50_ms": pct(chunk, 0.5), "chunk_step_p90_ms": pct(chunk, 0.9),
            "chunk_step_p99_ms": pct(chunk, 0.99), "chunk_step_max_ms": max(chunk),
            "decision_p50_ms": pct([s["decision_ms"] for s in silent], 0.5),
            "pixels_host_p50_ms": pct([s["pixels_ms"] for s in silent], 0.5),
            "pixels_host_p99_ms": pct([s["pixels_ms"] for s in silent], 0.99),
            "chunk_step_first_half_p50_ms": pct(chunk[:len(chunk) // 2], 0.5),
            "chunk_step_second_half_p50_ms": pct(chunk[len(chunk) // 2:], 0.5),
            "gc_ms_total_in_steps": sum(s["gc_ms"] for s in steps),
            "steps_with_gc_over_5ms": sum(s["gc_ms"] > 5 for s in steps),
            "question_ttft_p50_ms": pct(ttft, 0.5), "question_ttft_max_ms": max(ttft) if ttft else None,
            "reply_ms_per_token_p50": pct([r[1] / max(1, r[0]) for s in steps if (r := s["reply"])], 0.5),
            "decode": decode,
            "decode_ms_per_token_p50": pct([d["ms_per_token"] for d in decode], 0.5),
            "decode_context_tokens_min": min((d["context_tokens"] for d in decode), default=None),
            "idle_ms_max": max(s["idle_ms"] for s in steps),
            "step_plus_idle_ms_max": max(s["ms"] + s["idle_ms"] for s in steps),
            "context_tokens_max": max(s["context"] for s in steps),
            "mem_alloc_min_gb": min(mem), "mem_alloc_max_gb": max(mem),
            "mem_alloc_max_first_half_gb": max(mem[:half] or mem),
            "mem_alloc_max_second_half_gb": max(mem[half - 1:] or mem),
            "step_ms": [round(s["ms"], 2) for s in steps],
            "pixels_ms": [round(s["pixels_ms"], 2) for s in steps],
            "gc_ms": [round(s["gc_ms"], 2) for s in steps]}
