"""Sessions per GPU with the engine as it is (issue 17, item 1).

    python -m model.bench.capacity --out F.json [--ns 1 2 4 8 12 16] [--seconds-per-n 120]
    python -m model.bench.capacity --tiny --device cpu --ns 1 2 --seconds-per-n 4 --out /tmp/c.json
    python -m model.bench.capacity --merge A.json B.json --out C.json

Contract:
* Builds the random-weight Qwen3-VL in the 8B shape (``--config``; ``--tiny``: the tiny one,
  float32) in the engine as the app loads it, with the ``EngineConfig`` defaults (pixel
  budget, reply length, windows) and the caches the app would preallocate for the largest
  N that fits the GPU's memory (a live and a shadow cache per session); larger N are
  reported as failing on memory, with the numbers.
* For each N of ``--ns`` in order: N live sessions of the app (``model.bench.fleet``: the
  app's LiveSession, Orchestrator and shared EngineWorker) in real time for
  ``--seconds-per-n``: 640x480 frames at 2 fps, 1-s chunks, a question every
  ``--question-every-s`` per session (staggered), replies cut at 12-40 tokens.
  Per N: chunk step p50/p99 (the engine's ``StepDecision.step_ms`` of silent steps), chunk
  wait (chunk end -> its decision delivered), question -> first token p50/p99 (the
  question's ``UserText`` -> ``ReplyStarted``), reply ms/token (``ReplyStarted`` ->
  ``ReplyEnded`` over its tokens) overall and while another session replies, chunks
  skipped (indices missing among the chunks the orchestrator sent to the engine, and at
  least one per "skipping video" error it raised), GPU memory (peak allocated and
  reserved), GPU busy fraction (NVML or nvidia-smi samples; null without either), the
  engine thread's busy fraction (steps, idle work), errors.
* Stops at the first N that fails the bar (``failures``: p99 chunk step <= 100 ms, p99
  question -> first token <= 150 ms, no chunk skipped, no engine error). Top level:
  ``capacity_sessions`` (largest N before the first failure) and ``limit`` (one line,
  ``limit_line``). JSON is written after every N; ``--deadline-s`` skips an N that would not
  finish in time (listed under ``not_run``), so a call stays under the device's limit.
* ``--merge`` joins the rows of earlier files (later files win per N) and recomputes the
  top level; bad arguments: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from model.bench.engine import add_model_args, bad_args, record_error, setup_or_record
from model.bench.stats import pct

BAR = {"chunk_step_p99_ms": 100.0, "question_ttft_p99_ms": 150.0, "chunks_skipped": 0}


# --- pure decisions ------------------------------------------------------------------------
def failures(row: dict, bar: dict = BAR) -> list[str]:
    """Why one N fails the bar (empty: it passes)."""
    if row.get("not_run"):
        return [row["not_run"]]
    out = []
    step, ttft = row.get("chunk_step_p99_ms"), row.get("question_ttft_p99_ms")
    if step is None or step > bar["chunk_step_p99_ms"]:
        out.append(f"p99 chunk step {_ms(step)} > {bar['chunk_step_p99_ms']:g} ms")
    if ttft is None or ttft > bar["question_ttft_p99_ms"]:
        out.append(f"p99 question->first token {_ms(ttft)} > {bar['question_ttft_p99_ms']:g} ms"
                   if ttft is not None else "no question answered")
    if (row.get("chunks_skipped") or 0) > bar["chunks_skipped"]:
        out.append(f"{row['chunks_skipped']} chunk(s) skipped")
    if row.get("engine_errors"):
        out.append(f"{row['engine_errors']} engine error(s)")
    return out


def capacity(rows: list[dict], bar: dict = BAR) -> tuple[int, dict | None]:
    """(largest N that passes before the first failing one, the first failing row or None)."""
    best = 0
    for row in sorted(rows, key=lambda r: r["n"]):
        if failures(row, bar):
            return best, row
        best = row["n"]
    return best, None


def limit_line(rows: list[dict], bar: dict = BAR) -> str:
    """One line: the capacity and what limits it, with the numbers."""
    cap, fail = capacity(rows, bar)
    ran = [r for r in rows if not r.get("not_run")]
    if fail is None:
        top = max(ran, key=lambda r: r["n"]) if ran else None
        if top is None:
            return "nothing ran"
        return (f"not reached: every N up to {top['n']} passed ({_load(top)}); "
                "run larger N to find the limit")
    why = "; ".join(failures(fail, bar))
    if fail.get("not_run"):
        return f"{cap} sessions: N={fail['n']} {why}"
    eng, gpu = fail.get("engine_busy_fraction"), fail.get("gpu_busy_fraction")
    step = fail.get("chunk_step_p99_ms")
    if gpu is not None and gpu >= 0.85:
        what = "GPU time"
    elif eng is not None and eng >= 0.85:
        what = "the single engine thread"
    elif step is not None and step > bar["chunk_step_p99_ms"]:
        what = "the step itself (one session's step is over the bar without saturation)"
    else:
        what = "queueing behind other sessions' steps (round-robin on one engine thread)"
    return f"{cap} sessions: at N={fail['n']} {why}; limited by {what} ({_load(fail)})"


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.1f} ms"


def _load(row: dict) -> str:
    f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return (f"engine thread busy {f(row.get('engine_busy_fraction'))} of wall time, GPU busy "
            f"{f(row.get('gpu_busy_fraction'))}, GPU memory peak {f(row.get('mem_reserved_peak_gb'))} GB "
            f"reserved of {f(row.get('mem_total_gb'))}")


def summarize(rec, *, t_mono: tuple[float, float] | None = None) -> dict:
    """One N's numbers from a ``fleet.FleetRecord`` (times in the measured window only)."""
    lo, hi = rec.window
    steps, waits, ttft, spans, ctx = [], [], [], [], []
    skipped = overload = fatal = 0
    errors = []
    for log in rec.logs:
        start = log.clock.start
        inside = lambda t: t is not None and lo <= t <= hi  # noqa: E731
        for t, idx, ms, q, context in log.decisions:
            if not inside(t):
                continue
            ctx.append(context)
            if not q:
                steps.append(ms)
            if idx in log.chunks:
                waits.append((t - log.chunks[idx]) * 1000)
        for r_start, r_end, n_tok, ask in list(log.replies.values()):
            if not inside(r_start):
                continue
            if ask is not None:
                ttft.append((r_start - ask) * 1000)
            if r_end is not None and n_tok > 0:
                spans.append((start + r_start, start + r_end, n_tok))
        idxs = sorted(i for i, t in log.chunks.items() if inside(t))
        if idxs:
            skipped += len(set(range(idxs[0], idxs[-1] + 1)) - set(idxs))
        for t, source, msg, is_fatal in log.errors:
            if not inside(t):
                continue
            overload += "skipping video" in msg
            fatal += bool(is_fatal) or (source == "engine" and "skipping video" not in msg)
            if len(errors) < 5:
                errors.append(f"{source}: {msg}")
    tok_all, tok_overlap = [], []
    for k, (a, b, n_tok) in enumerate(spans):
        v = (b - a) * 1000 / n_tok
        tok_all.append(v)
        if any(j != k and a < b2 and a2 < b for j, (a2, b2, _n) in enumerate(spans)):
            tok_overlap.append(v)
    m0, m1 = t_mono or rec.window_mono
    wall = max(1e-9, m1 - m0)
    return {"n": rec.n, "window_s": round(hi - lo, 1), "warm_s": round(rec.warm_s, 1),
            "context_after_warm": [min(rec.context_after_warm), max(rec.context_after_warm)],
            "context_tokens_p50": pct(ctx, 0.5), "context_tokens_max": max(ctx, default=None),
            "silent_steps": len(steps), "chunk_step_p50_ms": pct(steps, 0.5),
            "chunk_step_p99_ms": pct(steps, 0.99), "chunk_step_max_ms": max(steps, default=None),
            "chunk_wait_p50_ms": pct(waits, 0.5), "chunk_wait_p99_ms": pct(waits, 0.99),
            "questions_answered": len(ttft), "question_ttft_p50_ms": pct(ttft, 0.5),
            "question_ttft_p99_ms": pct(ttft, 0.99), "question_ttft_max_ms": max(ttft, default=None),
            "replies": len(spans), "reply_tokens_p50": pct([s[2] for s in spans], 0.5),
            "reply_ms_per_token_p50": pct(tok_all, 0.5),
            "reply_ms_per_token_while_others_reply_p50": pct(tok_overlap, 0.5),
            "replies_overlapping": len(tok_overlap),
            "chunks_skipped": max(skipped, overload), "overload_errors": overload, "engine_errors": fatal,
            "errors_first": errors,
            "engine_busy_fraction": rec.meter.busy_s(m0, m1) / wall,
            "engine_step_busy_fraction": rec.meter.busy_s(m0, m1, "step") / wall,
            "engine_idle_work_fraction": rec.meter.busy_s(m0, m1, "maintain") / wall}


# --- measurement helpers ---------------------------------------------------------------------
class GpuBusy:
    """Samples the GPU's utilisation (NVML through torch, else nvidia-smi) every ``period_s``."""

    def __init__(self, torch, device, period_s: float = 0.5) -> None:
        self.torch, self.device, self.period_s = torch, device, period_s
        self.source, self.samples = None, []
        self._stop = threading.Event()
        if device.type != "cuda":
            return
        try:
            torch.cuda.utilization(device)
            self.source = "nvml"
        except Exception:            # no pynvml: fall back to the command line tool
            self.source = "nvidia-smi" if shutil.which("nvidia-smi") else None

    def read(self) -> float | None:
        if self.source == "nvml":
            return self.torch.cuda.utilization(self.device) / 100
        idx = self.device.index or 0
        r = subprocess.run(["nvidia-smi", f"--id={idx}", "--query-gpu=utilization.gpu",
                            "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
        return float(r.stdout.strip().splitlines()[0]) / 100 if r.stdout.strip() else None

    def __enter__(self) -> "GpuBusy":
        self.samples = []
        if self.source is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="gpu-busy", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                v = self.read()
            except Exception:        # a failed sample is skipped, the others still count
                v = None
            if v is not None:
                self.samples.append((time.monotonic(), v))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.source is not None:
            self._thread.join(5)

    def mean(self, t0: float, t1: float) -> float | None:
        vals = [v for t, v in self.samples if t0 <= t <= t1]
        return sum(vals) / len(vals) if vals else None


class Capacity:
    def __init__(self, args) -> None:
        import torch
        self.torch, self.args = torch, args
        self.dev = torch.device(args.device)
        self.out = Path(args.out)
        self.bar = {"chunk_step_p99_ms": args.bar_step_p99_ms, "question_ttft_p99_ms": args.bar_ttft_p99_ms,
                    "chunks_skipped": 0}
        self.res: dict = {"mode": "capacity", "errors": [], "bar": self.bar, "rows": [], "not_run": []}

    def save(self) -> None:
        rows = self.res["rows"]
        cap, fail = capacity(rows, self.bar)
        limit = limit_line(rows, self.bar)
        if fail is None and self.res["not_run"]:
            limit += "; not run for time: N=" + ", ".join(str(r["n"]) for r in self.res["not_run"])
        self.res.update(capacity_sessions=cap, first_failing_n=fail["n"] if fail else None, limit=limit)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.res, indent=1, default=float), encoding="utf-8")

    def setup(self) -> None:
        from app.workers import EngineWorker
        from model.bench.engine import attach, cache_bytes, engine_for, env_info
        from model.bench.fleet import Fleet
        torch, a = self.torch, self.args
        cuda = self.dev.type == "cuda"
        self.res.update(**env_info(self.dev),
                        args={k: v for k, v in vars(a).items() if k not in ("merge",)},
                        driver="app.live.LiveSession x N -> app.workers.EngineWorker (one engine thread) "
                               "-> model.session.AuraSession, FastBackend + FastVision; voice and "
                               "proactive remarks off; replies cut after 12-40 tokens (the step's cancel hook)")
        t = time.perf_counter()
        model = engine_for(a.config, tiny=a.tiny, device=str(self.dev), overrides=a.engine_overrides)
        per_session = 2 * cache_bytes(model)
        want = max(a.ns)
        fit = want
        if cuda:
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.dev)
            fit = int((free - a.reserve_gb * 1e9) // per_session)
            self.res.update(mem_total_gb=total / 1e9, mem_free_after_weights_gb=free / 1e9)
        sessions = max(1, min(want, fit))
        attach(model, sessions)
        self.model = model
        self.worker = EngineWorker().start()
        self.fleet = Fleet(model, self.worker)
        cfg = model.cfg
        self.res.update(setup_s=round(time.perf_counter() - t, 1), sessions_preallocated=sessions,
                        sessions_fit_memory=fit, reserve_gb=a.reserve_gb,
                        engine={"max_pixels": cfg.max_pixels, "pixel_budget": getattr(cfg, "pixel_budget", None),
                                "max_new_tokens": cfg.max_new_tokens, "video_window_s": cfg.video_window_s,
                                "float_window_s": cfg.float_window_s, "cache_tokens": model.backend.max_tokens,
                                "cache_gb": per_session / 2e9, "caches": model.backend.pool_size})
        self.per_session = per_session
        print(f"setup {self.res['setup_s']} s: caches for {sessions} session(s) "
              f"({per_session / 1e9:.2f} GB each), {fit} fit", flush=True)

    def run_n(self, n: int) -> dict:
        torch, a = self.torch, self.args
        cuda = self.dev.type == "cuda"
        if n > self.res["sessions_preallocated"]:
            need = n * self.per_session / 1e9
            return {"n": n, "not_run": (f"memory: {n} sessions need {need:.1f} GB of caches; "
                                        f"{self.res.get('mem_free_after_weights_gb', 0):.1f} GB free after "
                                        f"the weights ({a.reserve_gb:g} GB kept for activations)")}
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.dev)
        with GpuBusy(torch, self.dev) as busy:
            rec = self.fleet.run(n, seconds=a.seconds_per_n, settle_s=a.settle_s, warm_chunks=a.warm_chunks,
                                 question_every_s=a.question_every_s, reply_tokens=tuple(a.reply_tokens),
                                 seed=a.seed, progress=lambda m: print(m, flush=True))
        row = summarize(rec)
        row["gpu_busy_fraction"] = busy.mean(*rec.window_mono)
        row["gpu_busy_source"] = busy.source
        if cuda:
            row.update(mem_allocated_peak_gb=torch.cuda.max_memory_allocated(self.dev) / 1e9,
                       mem_reserved_peak_gb=torch.cuda.max_memory_reserved(self.dev) / 1e9,
                       mem_total_gb=self.res["mem_total_gb"],
                       app_preallocated_caches_gb=n * self.per_session / 1e9)
        return row

    def run(self) -> int:
        a = self.args
        t_start = time.perf_counter()
        if not setup_or_record(self):
            return 1
        self.save()
        per_n = lambda n: a.seconds_per_n + a.settle_s + 3.0 + n * a.warm_s_per_session  # noqa: E731
        try:
            for k, n in enumerate(a.ns):
                if a.deadline_s and time.perf_counter() - t_start + per_n(n) > a.deadline_s:
                    self.res["not_run"] = [{"n": m, "why": "time (--deadline-s)"} for m in a.ns[k:]]
                    print(f"N={n}: not started, it would pass --deadline-s {a.deadline_s:g}", flush=True)
                    break
                print(f"== N={n} ({a.seconds_per_n:g} s)", flush=True)
                try:
                    row = self.run_n(n)
                except Exception:
                    row = {"n": n, "not_run": "failed: " + record_error(self, f"n={n}")}
                self.res["rows"].append(row)
                self.save()
                print(_row_line(row), flush=True)
                if failures(row, self.bar):
                    print(f"N={n} fails the bar: {'; '.join(failures(row, self.bar))}; stopping", flush=True)
                    break
        finally:
            self.worker.stop()
        print(f"capacity_sessions={self.res['capacity_sessions']}  limit: {self.res['limit']}", flush=True)
        return 1 if self.res["errors"] else 0


def _row_line(row: dict) -> str:
    if row.get("not_run"):
        return f"N={row['n']}: not run: {row['not_run']}"
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    return (f"N={row['n']}: step p50/p99 {f(row['chunk_step_p50_ms'])}/{f(row['chunk_step_p99_ms'])} ms, "
            f"wait p99 {f(row['chunk_wait_p99_ms'])} ms, question->first token p50/p99 "
            f"{f(row['question_ttft_p50_ms'])}/{f(row['question_ttft_p99_ms'])} ms "
            f"({row['questions_answered']}), reply {f(row['reply_ms_per_token_p50'])} ms/token, "
            f"skipped {row['chunks_skipped']}, engine busy {row['engine_busy_fraction']:.2f}, GPU busy "
            f"{f(row.get('gpu_busy_fraction'))}, mem {f(row.get('mem_reserved_peak_gb'))} GB")


def merge(paths: list[str], out: str) -> int:
    rows: dict[int, dict] = {}
    base: dict = {}
    for p in paths:
        try:
            r = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"--merge: cannot read {p}: {e}", file=sys.stderr)
            return 2
        base = {**base, **{k: v for k, v in r.items() if k not in ("rows",)}}
        rows.update({row["n"]: row for row in r.get("rows", [])})
    res = {**base, "rows": [rows[n] for n in sorted(rows)], "merged_from": paths}
    bar = base.get("bar") or BAR
    cap, fail = capacity(res["rows"], bar)
    res.update(capacity_sessions=cap, first_failing_n=fail["n"] if fail else None, limit=limit_line(res["rows"], bar))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1), encoding="utf-8")
    print(f"capacity_sessions={cap}  limit: {res['limit']}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.bench.capacity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16], help="session counts, in order")
    ap.add_argument("--seconds-per-n", type=float, default=120.0)
    ap.add_argument("--settle-s", type=float, default=3.0, help="seconds after the sessions open, not counted")
    ap.add_argument("--warm-chunks", type=int, default=30, help="silent chunks fed before (plus a 0-15 stagger)")
    ap.add_argument("--warm-s-per-session", type=float, default=1.5, help="for --deadline-s planning")
    ap.add_argument("--question-every-s", type=float, default=20.0)
    ap.add_argument("--reply-tokens", type=int, nargs=2, default=[12, 40], metavar=("MIN", "MAX"))
    ap.add_argument("--bar-step-p99-ms", type=float, default=BAR["chunk_step_p99_ms"])
    ap.add_argument("--bar-ttft-p99-ms", type=float, default=BAR["question_ttft_p99_ms"])
    ap.add_argument("--deadline-s", type=float, default=0.0, help="do not start an N that would end later")
    ap.add_argument("--reserve-gb", type=float, default=6.0, help="GPU memory kept free beside the caches")
    add_model_args(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="join earlier results into --out")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.out)
    own = ("--ns: expected increasing session counts >= 1" if sorted(a.ns) != a.ns or a.ns[0] < 1 else
           "--reply-tokens: expected 1 <= MIN <= MAX" if not 1 <= a.reply_tokens[0] <= a.reply_tokens[1] else None)
    return bad_args(a, own) or Capacity(a).run()


if __name__ == "__main__":
    sys.exit(main())
