"""Benchmark: plain transformers vs the fast path, in one process on one device.

    python -m model.bench --minutes 10 --out docs/benchmarks/FILE.json [--micro]
    python -m model.bench --tiny --device cpu --minutes 0.5 --out /tmp/x.json   (smoke run)

Contract: builds a random-weight bf16 Qwen3-VL in the real 8B shape (``--config``, default
the shared ``qwen3vl8b_config.json``), then runs, in order: the HBM copy bandwidth (decode
floor), the plain-transformers baseline (``model.bench.baseline``), the fast path's set-up
(``FastBackend`` + ``FastVision``: compile and graph capture, timed), kernel checks at the
real dimensions, the 8B agreement check (``model.bench.checks.agreement``), the benchmark's
own AURA stream harness for ``--minutes`` of stream time, strict and with folded turn ends
(``model.bench.stream``: 1-s chunks of 640x480 = 300 visual tokens, vision encoder per
chunk, a question every 30 s, window cuts with the shadow rebuilt in idle time), the
ENGINE's stream (``model.bench.engine``: the real ``AuraSession`` on the same fast
backend, then its decode at >= ``--engine-decode-context`` tokens), the backend's own
decode loop at >= 15k tokens, vision encoder timings and optionally micro-benchmarks.

The headline keys (``decode_ms_per_token``, ``chunk_step_p50_ms``, ``chunk_step_p99_ms``,
``chunk_step_max_ms``, ``question_ttft_ms``) are the engine's (``headline_source``); the
harness's are ``harness_strict_*`` / ``harness_folded_*``, the backend loop's decode
``backend_decode_ms_per_token`` (the host picks each token) and ``backend_greedy_ms_per_token``
(the device loop, model/fast/greedy.py). ``--variants`` also times whole steps under other
kernel options (model/bench/micro.py); ``--only SECTION...`` runs just those sections after
the model is built (e.g. ``--only setup decode variants``). Writes JSON after each section, so a failed section still
leaves the others; a failed section is printed with its traceback, listed under
``errors`` and makes the exit code 1. Prints a table last (``model.bench.report``).
The streams run back to back (not paced in real time); the idle work of each second is
timed and checked against the second it must fit in.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

from model.bench.stats import pct

_ROOT = Path(__file__).resolve().parents[1]
_CONFIG_SPOTS = [_ROOT.parent / "shared", _ROOT.parent.parent / "shared", _ROOT / "shared"]
DEFAULT_CONFIG = next((d / "bench" / "qwen3vl8b_config.json" for d in _CONFIG_SPOTS
                       if (d / "bench" / "qwen3vl8b_config.json").is_file()),
                      _CONFIG_SPOTS[0] / "bench" / "qwen3vl8b_config.json")
GRID = (1, 30, 40)                      # 2 frames at 640x480, patch 16 -> 300 tokens after merge


class Sections:
    """Results in ``self.res`` written to ``self.out`` as JSON after every section; a failed
    section is printed with its traceback and listed under ``res["errors"]``."""
    res: dict
    out: Path

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.res, indent=1, default=float), encoding="utf-8")

    def section(self, name, fn) -> None:
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            fn()
        except Exception:                # reported, recorded, exit code 1: not swallowed
            traceback.print_exc()
            self.res["errors"].append({"section": name, "error": traceback.format_exc(limit=6)})
        self.res.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        self.save()


class Bench(Sections):
    def __init__(self, args):
        import torch
        self.torch, self.args = torch, args
        self.dev = torch.device(args.device)
        self.dtype = torch.float32 if args.tiny else torch.bfloat16
        self.res: dict = {"errors": []}
        self.out = Path(args.out)

    # ------------------------------------------------------------------ plumbing
    def sync(self) -> None:
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def pixels(self, i: int = 0):
        """Chunk i's pixel rows: 8 fixed random float32 CPU tensors (pinned on CUDA), the
        form the processor hands over; the H2D copy is part of every timed encode."""
        if not hasattr(self, "_pix"):
            pin = self.dev.type == "cuda"
            self._pix = [self.torch.randn(GRID[0] * GRID[1] * GRID[2], 3 * 2 * 16 * 16,
                                          generator=self.torch.Generator().manual_seed(1000 + j))
                         for j in range(8)]
            self._pix = [p.pin_memory() if pin else p for p in self._pix]
        return self._pix[i % 8]

    # ------------------------------------------------------------------ sections
    def env(self) -> None:
        import transformers
        torch = self.torch
        import platform
        r = self.res
        r["date"] = datetime.date.today().isoformat()
        r["device"] = torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda" else platform.processor() or "cpu"
        r["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}
        try:
            import triton
            r["versions"]["triton"] = triton.__version__
        except ImportError:
            r["versions"]["triton"] = None
        print(json.dumps({k: r[k] for k in ("date", "device", "versions")}), flush=True)

    def build(self) -> None:
        from model.fast.tiny import build_qwen3vl, load_config, tiny_config
        cfg = tiny_config() if self.args.tiny else load_config(self.args.config)
        t = time.perf_counter()
        self.model = build_qwen3vl(cfg, dtype=self.dtype, device=self.dev, seed=0)
        self.sync()
        lm = self.model.model.language_model
        nbytes = lambda ps: sum(p.numel() * p.element_size() for p in ps)  # noqa: E731
        self.lm_bytes = nbytes(lm.layers.parameters()) + nbytes(lm.norm.parameters()) \
            + nbytes(self.model.lm_head.parameters())
        c = lm.config
        self.kv_bytes_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim \
            * self.model.lm_head.weight.element_size()
        self.res.update(model_build_s=round(time.perf_counter() - t, 1),
                        param_gb=round(nbytes(self.model.parameters()) / 1e9, 2),
                        lm_read_gb_per_token=round(self.lm_bytes / 1e9, 3),
                        kv_bytes_per_token=self.kv_bytes_per_token)

    def hbm(self) -> None:
        torch = self.torch
        if self.dev.type != "cuda":          # no device memory to measure: keys stay, null
            self.res.update(hbm_tb_per_s=None, hbm_floor_ms_per_token=None, peak_mem_gb=None)
            return
        a = torch.randn(int(2e9) // 2, dtype=torch.bfloat16, device=self.dev)
        b = torch.empty_like(a)
        for _ in range(3):
            b.copy_(a)
        self.sync()
        t = time.perf_counter()
        for _ in range(10):
            b.copy_(a)
        self.sync()
        bw = 2 * a.numel() * 2 * 10 / (time.perf_counter() - t)
        del a, b
        torch.cuda.empty_cache()
        self.bw = bw
        ctx = self.args.floor_context
        self.res.update(hbm_tb_per_s=round(bw / 1e12, 3), hbm_floor_context_tokens=ctx,
                        hbm_floor_ms_per_token=round((self.lm_bytes + ctx * self.kv_bytes_per_token) / bw * 1e3, 3))

    def baseline(self) -> None:
        from model.bench.baseline import run_baseline
        r = run_baseline(self.model, lambda: self.pixels().to(self.dev), chunks=self.args.baseline_chunks,
                         decode_tokens=self.args.baseline_decode, grid=GRID)
        self.res["baseline"] = r
        self.res.update(baseline_chunk_step_p50_ms=r["chunk_step_p50_ms"],
                        baseline_decode_ms_per_token=r["decode_ms_per_token"])
        if self.dev.type == "cuda":
            self.torch.cuda.empty_cache()
            self.res["baseline_peak_mem_gb"] = round(self.torch.cuda.max_memory_allocated() / 1e9, 2)
            self.torch.cuda.reset_peak_memory_stats()

    def setup(self) -> None:
        from model.fast.backend import FastBackend
        from model.fast.vision import FastVision
        t = time.perf_counter()
        opts = json.loads(self.args.kernel_options) if self.args.kernel_options else None
        self.fast = FastBackend(self.model, self.args.max_tokens, pool_size=3, kernel_options=opts)
        self.sync()
        t1 = time.perf_counter()
        self.vision = FastVision(self.model, [GRID])
        self.sync()
        self.res.update(setup_backend_s=round(t1 - t, 1), setup_vision_s=round(time.perf_counter() - t1, 1),
                        max_tokens=self.args.max_tokens, pool_size=3,
                        kernel_options=getattr(self.fast.ops, "__dict__", {}))

    def kernel_check(self) -> None:
        if self.dev.type != "cuda":
            return
        from model.bench.checks import failed, op_checks
        c = self.model.config.text_config
        dims = dict(hq=c.num_attention_heads, hkv=c.num_key_value_heads, d=c.head_dim, hidden=c.hidden_size,
                    inter=c.intermediate_size, slots=2, tmax=2048,
                    cases=((1, 0, 1), (1, 1999, 1), (336, 0, 316), (336, 1500, 330)))
        res = op_checks(self.fast.ops, "cuda", dims)
        self.res["kernel_check_failed"] = {k: res[k] for k in failed(res)}
        self.res["kernel_check_max_err_bf16"] = max(e for k, (e, _t) in res.items() if "bfloat16" in k)
        self.res["kernel_check_max_err_fp32"] = max(e for k, (e, _t) in res.items() if "float32" in k)

    def agreement(self) -> None:
        from model.bench.checks import agreement
        self.res["agreement"] = agreement(self.model, self.fast, self.vision.encode,
                                          lambda i: self.pixels(i), grid=GRID,
                                          chunks=self.args.agreement_chunks, steps=self.args.agreement_steps)

    def stream(self, fold: bool = False) -> None:
        from model.bench.stream import StreamHarness
        torch = self.torch
        h = StreamHarness(self.fast, self.vision.encode, self.model.model.language_model.embed_tokens.weight.detach(),
                          grid=GRID, fold_turn_end=fold)
        steps = []
        n = int(self.args.minutes * 60)
        try:
            for k in range(n):
                q = list(range(2000, 2012)) if k % 30 == 15 else None
                s = h.step(self.pixels(k), q)
                s["idle_ms"] = h.idle(self.args.idle_budget_ms)
                if self.dev.type == "cuda":
                    s["mem_gb"] = torch.cuda.memory_allocated() / 1e9
                steps.append(s)
        finally:
            h.close()
        silent = [s for s in steps if s["kind"] == "silent"]
        chunk = [s["ms"] for s in silent]
        ttft = [s["ttft_ms"] for s in steps if s["kind"] == "question"]
        dec = [d for s in steps for d in s["decode_ms"]]
        half = len(steps) // 2
        st = {"mode": "folded turn ends" if fold else "strict", "chunks": n, "silent_steps": len(chunk),
              "question_steps": len(ttft), "cuts": h.cuts,
              "chunk_step_p50_ms": pct(chunk, 0.5), "chunk_step_p90_ms": pct(chunk, 0.9),
              "chunk_step_p99_ms": pct(chunk, 0.99), "chunk_step_max_ms": max(chunk),
              "decision_p50_ms": pct([s["decision_ms"] for s in silent], 0.5),
              "chunk_step_first_half_p50_ms": pct(chunk[:half], 0.5),
              "chunk_step_second_half_p50_ms": pct(chunk[half:], 0.5),
              "silent_cut_step_ms": [round(s["ms"], 2) for s in silent if s["cut"]],
              "cut_late_ms_max": max(s["cut_late_ms"] for s in steps),
              "question_ttft_p50_ms": pct(ttft, 0.5) if ttft else None,
              "question_ttft_max_ms": max(ttft) if ttft else None,
              "question_at_cut_ttft_ms": [round(s["ttft_ms"], 2) for s in steps if s["cut"] and s["kind"] == "question"],
              "reply_decode_ms_per_token_p50": pct(dec, 0.5),
              "idle_ms_max": max(s["idle_ms"] for s in steps),
              "step_plus_idle_ms_max": max(s["ms"] + s["idle_ms"] for s in steps),
              "context_tokens_max": max(s["context"] for s in steps),
              "context_tokens_p50": pct([s["context"] for s in steps], 0.5),
              "p_silent_first_chunks": [round(s["p_silent"], 6) for s in steps[:3]],
              "step_ms": [round(s["ms"], 2) for s in steps]}
        if self.dev.type == "cuda":
            m = [s["mem_gb"] for s in steps[1:]]
            st.update(mem_alloc_min_gb=min(m), mem_alloc_max_gb=max(m),
                      mem_alloc_max_first_half_gb=max(m[:half]), mem_alloc_max_second_half_gb=max(m[half - 1:]))
            self.res["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        mode = "folded" if fold else "strict"
        self.res["stream_folded" if fold else "stream"] = st
        self.res.update({f"harness_{mode}_chunk_step_p50_ms": st["chunk_step_p50_ms"],
                         f"harness_{mode}_chunk_step_p99_ms": st["chunk_step_p99_ms"],
                         f"harness_{mode}_chunk_step_max_ms": st["chunk_step_max_ms"],
                         f"harness_{mode}_question_ttft_ms": st["question_ttft_p50_ms"]})

    def engine(self, overrides: dict | None = None, key: str = "engine") -> None:
        """The headline: the engine's AuraSession on this FastBackend + FastVision, with the
        EngineConfig defaults or ``overrides`` (``--engine-set``; ``--engine-alt`` runs it
        again as ``engine_alt`` with other values, e.g. the other pixel budget)."""
        import dataclasses

        from app.config import EngineConfig
        from model.bench.engine import engine_model, run_engine_stream
        from model.prompt import Layout
        from model.vlm import context_budget
        model = engine_model(self.model, max_new_tokens=self.args.engine_reply_max, overrides=overrides)
        self.vision.auto_prepare = True       # another pixel budget is another grid (the engine's setting)
        model.backend, model.vision.fast = self.fast, self.vision
        r = run_engine_stream(model, minutes=self.args.minutes, idle_budget_ms=self.args.idle_budget_ms,
                              decode_min_context=self.args.engine_decode_context)
        app_cfg = dataclasses.replace(model.cfg, max_new_tokens=EngineConfig().max_new_tokens)
        budget = context_budget(app_cfg, Layout.for_config(model.tokenizer, model.specials, app_cfg))
        r.update(engine_cache_tokens=budget, engine_cache_gb_4_caches=round(4 * budget * self.kv_bytes_per_token / 1e9, 2),
                 engine_overrides=overrides or {}, max_pixels=model.cfg.max_pixels,
                 pixel_budget=getattr(model.cfg, "pixel_budget", None))
        self.res[key] = r
        if key != "engine":
            self.res.update({f"{key}_{k}": r[k] for k in ("chunk_step_p50_ms", "chunk_step_p99_ms",
                                                            "question_ttft_p50_ms", "decode_ms_per_token_p50")})
            return
        self.res.update(headline_source="engine: model.session.AuraSession, FastBackend + FastVision",
                        decode_ms_per_token=r["decode_ms_per_token_p50"],
                        decode_context_tokens=r["decode_context_tokens_min"],
                        chunk_step_p50_ms=r["chunk_step_p50_ms"], chunk_step_p99_ms=r["chunk_step_p99_ms"],
                        chunk_step_max_ms=r["chunk_step_max_ms"], question_ttft_ms=r["question_ttft_p50_ms"])
        if self.dev.type == "cuda":
            self.res["peak_mem_gb"] = round(self.torch.cuda.max_memory_allocated() / 1e9, 2)

    def decode(self) -> None:
        f = self.fast
        emb_w = self.model.model.language_model.embed_tokens.weight.detach()
        out = []
        for ctx in self.args.decode_contexts:
            if ctx + self.args.decode_tokens + 8 > f.max_tokens:
                continue
            c = f.new_cache()
            try:
                out.append(self._decode_at(c, ctx, emb_w))
            finally:
                f.release(c)
        self.res["decode"] = out
        self.res["backend_decode_ms_per_token"] = out[0]["ms_per_token_p50"] if out else None
        self.res["backend_decode_context_tokens"] = out[0]["context_tokens"] if out else None
        self.res["backend_greedy_ms_per_token"] = out[0]["greedy_ms_per_token_p50"] if out else None

    def _decode_at(self, c, ctx, emb_w) -> dict:
        """Fill cache ``c`` to ``ctx`` tokens, then time greedy decode as an engine runs it."""
        torch, f = self.torch, self.fast
        g = torch.Generator().manual_seed(ctx)
        while f.length(c) < ctx:
            n = min(512, ctx - f.length(c))
            e = (torch.randn(n, f.hidden, generator=g) * 0.02).to(self.dev, self.dtype)
            p = torch.arange(f.length(c), f.length(c) + n).expand(3, n)
            logits = f.append(c, e, p)
        tok, times = int(logits.argmax()), []
        for j in range(self.args.decode_tokens):
            self.sync()
            t = time.perf_counter()
            logits = f.append(c, emb_w[tok][None], torch.full((3, 1), ctx + j))
            tok = int(logits.argmax())
            times.append((time.perf_counter() - t) * 1e3)
        row = {"context_tokens": ctx, "ms_per_token_p50": pct(times, 0.5), "ms_per_token_mean": sum(times) / len(times)}
        row.update(self._greedy_at(c, ctx))
        if f.use_graphs:
            g1 = f._graphs[(1, False)]
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(50):
                g1.replay()
            b.record()
            self.sync()
            row["graph_replay_ms"] = a.elapsed_time(b) / 50
            if getattr(self, "bw", None):
                floor = (self.lm_bytes + ctx * self.kv_bytes_per_token) / self.bw * 1e3
                row.update(floor_ms=floor, graph_vs_floor=row["graph_replay_ms"] / floor)
        return row

    def _greedy_at(self, c, ctx) -> dict:
        """The device-side greedy loop (model/fast/greedy.py) from the same ``ctx`` tokens,
        fed and read as the session does: ms per token over whole runs (median of 3)."""
        f, n = self.fast, self.args.decode_tokens
        f.truncate(c, ctx)
        first = int(f.append(c, self.model.model.language_model.embed_tokens.weight[:1].detach(),
                             self.torch.full((3, 1), ctx)).argmax())
        runs = []
        for _ in range(3):
            f.truncate(c, ctx + 1)
            self.sync()
            t = time.perf_counter()
            run = f.greedy(c, ctx + 1, None, limit=n)
            tok = first
            for _j in range(n):
                run.feed(tok)
                tok = run.next()
            run.close()
            self.sync()
            runs.append((time.perf_counter() - t) * 1e3 / n)
        row = {"greedy_ms_per_token_p50": pct(runs, 0.5), "greedy_runs_ms_per_token": runs}
        if f.use_graphs:
            f.truncate(c, ctx + 1)
            run = f.greedy(c, ctx + 1, None)
            run.feed(first)
            a, b = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(50):
                f._greedy_graph.replay()
            b.record()
            self.sync()
            run.close()
            row["greedy_graph_replay_ms"] = a.elapsed_time(b) / 50
        return row

    def variants(self) -> None:
        from model.bench.micro import run_variants
        if self.dev.type == "cuda":
            self.res["variants"] = run_variants(self.fast)

    def vision_timing(self) -> None:
        from model.fast.vision import hf_video_features
        res = {}
        for name, fn in (("fast", lambda p: self.vision.encode(p, GRID)),
                         ("hf_eager", lambda p: hf_video_features(self.model.model, p, GRID))):
            times = []
            for i in range(12):
                p = self.pixels(i)
                self.sync()
                t = time.perf_counter()
                fn(p)
                self.sync()
                times.append((time.perf_counter() - t) * 1e3)
            res[f"{name}_ms_p50"] = pct(times[2:], 0.5)
        self.res["vision_encode"] = res

    def micro(self) -> None:
        from model.bench.micro import run_micro
        if self.dev.type == "cuda":
            self.res["micro"] = run_micro(self.fast, self.vision)

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="stream time to simulate (1 chunk per second)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="Qwen3-VL config JSON (default: the 8B shape)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model in float32 (smoke run)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-tokens", type=int, default=20480)
    ap.add_argument("--baseline-chunks", type=int, default=48)
    ap.add_argument("--baseline-decode", type=int, default=32)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--agreement-steps", type=int, default=200)
    ap.add_argument("--agreement-chunks", type=int, default=6)
    ap.add_argument("--decode-contexts", type=int, nargs="+", default=[15360, 19456])
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--floor-context", type=int, default=15360)
    ap.add_argument("--idle-budget-ms", type=float, default=600.0)
    ap.add_argument("--kernel-options", default="", help='JSON for TritonOps, e.g. {"decode_splits": 64}')
    ap.add_argument("--micro", action="store_true", help="also run kernel micro-benchmarks")
    ap.add_argument("--variants", action="store_true",
                    help="also time whole steps under other kernel options (model.bench.micro.run_variants)")
    ap.add_argument("--only", nargs="+", metavar="SECTION",
                    help="run only these sections after build and hbm (e.g. setup decode variants)")
    ap.add_argument("--engine-reply-max", type=int, default=64, help="engine max_new_tokens (decode samples)")
    ap.add_argument("--engine-decode-context", type=int, default=14000,
                    help="engine decode is timed once the context holds this many tokens")
    ap.add_argument("--engine-set", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="EngineConfig fields of the engine section other than the defaults")
    ap.add_argument("--engine-alt", nargs="+", default=[], metavar="FIELD=VALUE",
                    help="run the engine section again with these fields (engine_alt), e.g. the "
                         "other pixel budget")
    args = ap.parse_args(argv)
    if args.config and not args.tiny and not Path(args.config).is_file():
        print(f"--config: no such file: {args.config}", file=sys.stderr)
        return 2
    from model.bench.engine import engine_overrides
    try:
        args.engine_overrides = engine_overrides(args.engine_set)
        args.engine_alt_overrides = engine_overrides(args.engine_alt) if args.engine_alt else None
    except ValueError as e:
        print(f"--engine-set/--engine-alt: {e}", file=sys.stderr)
        return 2
    from model.bench.report import table
    b = Bench(args)
    plan = [("env", b.env), ("build", b.build), ("hbm", b.hbm)]
    plan += [] if args.skip_baseline else [("baseline", b.baseline)]
    plan += [("setup", b.setup), ("kernel_check", b.kernel_check), ("agreement", b.agreement),
             ("stream", b.stream), ("stream_folded", lambda: b.stream(fold=True)),
             ("engine", lambda: b.engine(args.engine_overrides))]
    plan += [("engine_alt", lambda: b.engine(args.engine_alt_overrides, "engine_alt"))] if args.engine_alt else []
    plan += [("decode", b.decode), ("vision", b.vision_timing)]
    plan += [("micro", b.micro)] if args.micro else []
    plan += [("variants", b.variants)] if args.variants or (args.only and "variants" in args.only) else []
    if args.only:
        keep = set(args.only) | ({"engine_alt"} if "engine" in args.only else set())
        plan = [(n, fn) for n, fn in plan if n in ("env", "build", "hbm") or n in keep]
    for name, fn in plan:
        b.section(name, fn)
        if name in ("build", "setup") and b.res["errors"]:
            break
    print(table(b.res), flush=True)
    return 1 if b.res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
