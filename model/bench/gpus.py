"""Placement benchmark (issue 7): the VLM's chunk steps with and without a speech load.

    python -m model.bench.gpus --vlm-device cuda:N --speech-device cuda:M --minutes 2 --out F.json
    python -m model.bench.gpus --tiny --vlm-device cpu --speech-device cpu --minutes 0.2 --out /tmp/x.json

Contract: builds the Qwen3-VL-8B shape (``--config``; random bf16 weights) on
``--vlm-device`` and wraps it in the engine exactly as the app loads it
(``AuraModel.attach_backend``: ``FastBackend`` with ``context_budget`` tokens per cache and
4 caches, ``FastVision``), then streams ``--minutes`` of 1-s chunks of 640x480 through the
engine's ``AuraSession`` twice (``model.bench.engine``: folded turn ends, pixels on
the device, a question every 30 s, the shadow maintained between chunks, then decode
samples at >= ``--decode-context`` tokens): first alone, then while a separate process
(``model.bench.speech_load``, spawned) runs a continuous TTS + ASR load (VITS at MMS-TTS size,
Whisper large-v3-turbo shape) on ``--speech-device``; with ``--speech-in-process`` the same
load runs in a thread of this process instead (as the app runs its speech workers: one
CUDA context, the GIL shared with the engine's host loop). Reports chunk-step p50 / p99 / max,
question TTFT and decode per phase, the ratios loaded / alone (goal: within 10%), the
speech loop's throughput alone and loaded, ``torch.cuda.max_memory_allocated`` per device
and process, and ``nvidia-smi`` samples when it is there. The stream is back to back
unless ``--realtime`` (one chunk a second). ``NCCL_NVLS_ENABLE=0`` is set for both
processes (no NCCL is used). JSON is written after each phase; a failure is recorded
under ``errors`` (exit code 1); bad arguments: one line, exit code 2.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from model.bench.main import DEFAULT_CONFIG, Sections

PHASE_KEYS = ("chunk_step_p50_ms", "chunk_step_p99_ms", "chunk_step_max_ms", "question_ttft_p50_ms",
              "decode_ms_per_token_p50")


def nvidia_smi() -> dict | None:
    """Per-GPU memory/utilisation and per-process memory, or None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = {}
    for key, query in (("gpus", "--query-gpu=index,name,memory.used,memory.total,utilization.gpu"),
                       ("apps", "--query-compute-apps=gpu_uuid,pid,used_memory")):
        try:
            r = subprocess.run([exe, query, "--format=csv,noheader,nounits"], capture_output=True,
                               text=True, timeout=20, check=False)
            out[key] = [line.strip() for line in r.stdout.splitlines() if line.strip()] or r.stderr.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            out[key] = f"failed: {e}"
    return out


def _device_name(torch, dev: str) -> str:
    return torch.cuda.get_device_name(torch.device(dev)) if dev.startswith("cuda") else "cpu"


class Placement(Sections):
    def __init__(self, args):
        import torch
        self.torch, self.args = torch, args
        self.res: dict = {"errors": [], "nvidia_smi": []}
        self.out = Path(args.out)

    def env(self) -> None:
        import platform

        import transformers
        torch, a = self.torch, self.args
        self.res.update(date=datetime.date.today().isoformat(), vlm_device=a.vlm_device,
                        speech_device=a.speech_device, minutes=a.minutes, realtime=a.realtime,
                        speech_mode="thread" if a.speech_in_process else "process",
                        same_device=a.vlm_device == a.speech_device,
                        device_names={d: _device_name(torch, d) for d in {a.vlm_device, a.speech_device}},
                        cuda_device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
                        versions={"torch": torch.__version__, "transformers": transformers.__version__,
                                  "python": platform.python_version()},
                        nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"))

    def build(self) -> None:
        from model.fast.backend import FastBackend
        from model.bench.engine import engine_model
        from model.fast.tiny import build_qwen3vl, load_config, tiny_config
        from model.fast.vision import FastVision
        from model.prompt import Layout
        from model.vlm import context_budget
        torch, a = self.torch, self.args
        if a.vlm_device.startswith("cuda"):             # graphs, streams and Triton use the current device
            torch.cuda.set_device(torch.device(a.vlm_device))
        t = time.perf_counter()
        dtype = torch.float32 if a.tiny else torch.bfloat16
        hf = build_qwen3vl(tiny_config() if a.tiny else load_config(a.config), dtype=dtype,
                           device=a.vlm_device, seed=0)
        self.model = engine_model(hf, max_new_tokens=a.reply_max)
        if a.vlm_device.startswith("cuda"):
            self.model.attach_backend()                 # what AuraModel.load does
        else:                                           # the same objects, eager, for CPU smoke runs
            m = self.model
            budget = context_budget(m.cfg, Layout.for_config(m.tokenizer, m.specials, m.cfg))
            m.backend = FastBackend(hf, max_tokens=budget, pool_size=4)
            m.vision.fast = FastVision(hf, [], auto_prepare=True)
        self.sync()
        self.res.update(setup_s=round(time.perf_counter() - t, 1), cache_tokens=self.model.backend.max_tokens,
                        cache_pool=self.model.backend.pool_size)

    def sync(self) -> None:
        if self.args.vlm_device.startswith("cuda"):
            self.torch.cuda.synchronize(self.torch.device(self.args.vlm_device))

    def phase(self, name: str) -> None:
        from model.bench.engine import run_engine_stream
        torch, a = self.torch, self.args
        cuda = a.vlm_device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(torch.device(a.vlm_device))
        r = run_engine_stream(self.model, minutes=a.minutes, idle_budget_ms=a.idle_budget_ms,
                              decode_samples=a.decode_samples, decode_min_context=a.decode_context,
                              realtime=a.realtime)
        if cuda:
            r["vlm_max_memory_allocated_gb"] = torch.cuda.max_memory_allocated(torch.device(a.vlm_device)) / 1e9
        self.res[name] = r
        self.res["nvidia_smi"].append({"after": name, **(nvidia_smi() or {"available": False})})

    def loaded(self) -> None:
        import multiprocessing as mp

        from model.bench.speech_load import speech_worker
        a = self.args
        if a.speech_in_process:                       # a pipe works between threads too
            parent, child = mp.Pipe()
            proc = threading.Thread(target=speech_worker, name="speech-load", daemon=True,
                                    args=(child, a.speech_device, a.tiny, a.speech_alone_s))
        else:
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=speech_worker, args=(child, a.speech_device, a.tiny, a.speech_alone_s),
                               daemon=True)
        proc.start()
        stopped = False
        try:
            ready = self._receive(parent, proc, a.speech_timeout_s)
            self.res["speech"] = {k: v for k, v in ready.items() if k != "type"}
            self.phase("loaded")
            parent.send("stop")
            stopped = True
            done = self._receive(parent, proc, a.speech_timeout_s)
            self.res["speech"].update(loaded=done["loaded"], max_memory_allocated_gb=done["max_memory_allocated_gb"])
        finally:
            if not stopped and proc.is_alive():   # the engine phase failed: end the load too
                parent.send("stop")
            proc.join(timeout=60)
            if proc.is_alive() and not a.speech_in_process:
                proc.terminate()
                proc.join(timeout=10)

    @staticmethod
    def _receive(conn, proc, timeout_s: float) -> dict:
        if not conn.poll(timeout_s):
            raise RuntimeError(f"speech process: no answer in {timeout_s:.0f} s (alive: {proc.is_alive()})")
        msg = conn.recv()
        if msg.get("type") == "error":
            raise RuntimeError("speech process failed:\n" + msg["error"])
        return msg

    def ratios(self) -> None:
        alone, loaded = self.res.get("alone") or {}, self.res.get("loaded") or {}
        ratio = {k: loaded[k] / alone[k] for k in PHASE_KEYS if alone.get(k) and loaded.get(k) is not None}
        self.res["ratio_loaded_over_alone"] = ratio
        self.res["within_10pct"] = {k: v <= 1.10 for k, v in ratio.items()}
        for name in ("alone", "loaded"):
            for k in PHASE_KEYS:
                self.res[f"{name}_{k}"] = (self.res.get(name) or {}).get(k)

    def run(self) -> int:
        plan = [("env", self.env), ("build", self.build), ("alone", lambda: self.phase("alone")),
                ("loaded", self.loaded), ("ratios", self.ratios)]
        for name, fn in plan:
            self.section(name, fn)
            if self.res["errors"] and name in ("env", "build"):
                break
        print(self.table(), flush=True)
        return 1 if self.res["errors"] else 0

    def table(self) -> str:
        r = self.res
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines = [f"VLM {r.get('vlm_device')} / speech {r.get('speech_device')} ({r.get('speech_mode')})  "
                 f"{r.get('device_names')}",
                 f"{'':28s}{'alone':>10s}{'loaded':>10s}{'ratio':>8s}"]
        for k in PHASE_KEYS:
            lines.append(f"{k:28s}{fmt(r.get(f'alone_{k}')):>10s}{fmt(r.get(f'loaded_{k}')):>10s}"
                         f"{fmt((r.get('ratio_loaded_over_alone') or {}).get(k)):>8s}")
        sp = r.get("speech") or {}
        for name in ("alone", "loaded"):
            s = sp.get(name) or {}
            lines.append(f"speech {name}: {fmt(s.get('loops_per_s'))} loops/s, TTS {fmt(s.get('tts_p50_ms'))} ms, "
                         f"ASR encode {fmt(s.get('encode_p50_ms'))} ms + decode {fmt(s.get('decode_p50_ms'))} ms")
        lines.append(f"max allocated GB: VLM {fmt((r.get('loaded') or {}).get('vlm_max_memory_allocated_gb'))}, "
                     f"speech {fmt(sp.get('max_memory_allocated_gb'))}")
        if r["errors"]:
            lines.append("FAILED SECTIONS: " + ", ".join(e["section"] for e in r["errors"]))
        return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.bench.gpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--vlm-device", required=True, help="cuda:N (or cpu with --tiny)")
    ap.add_argument("--speech-device", required=True, help="cuda:M (may equal --vlm-device)")
    ap.add_argument("--minutes", type=float, default=2.0, help="stream time per phase (1 chunk a second)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="Qwen3-VL config JSON (default: the 8B shape)")
    ap.add_argument("--tiny", action="store_true", help="tiny models in float32 (CPU smoke run)")
    ap.add_argument("--realtime", action="store_true", help="pace the stream at one chunk a second")
    ap.add_argument("--idle-budget-ms", type=float, default=600.0)
    ap.add_argument("--reply-max", type=int, default=64, help="engine max_new_tokens (decode samples)")
    ap.add_argument("--decode-samples", type=int, default=2)
    ap.add_argument("--decode-context", type=int, default=14000)
    ap.add_argument("--speech-alone-s", type=float, default=8.0, help="seconds the speech loop is timed alone")
    ap.add_argument("--speech-timeout-s", type=float, default=300.0)
    ap.add_argument("--speech-in-process", action="store_true",
                    help="run the speech load in a thread of this process (the app's layout) instead of "
                         "a separate process")
    args = ap.parse_args(argv)
    for name in ("vlm_device", "speech_device"):
        dev = getattr(args, name)
        if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            print(f"--{name.replace('_', '-')}: expected cuda:N or cpu, got {dev!r}", file=sys.stderr)
            return 2
        if dev == "cpu" and not args.tiny:
            print(f"--{name.replace('_', '-')}: cpu needs --tiny (the 8B shape runs on a GPU)", file=sys.stderr)
            return 2
        if dev.startswith("cuda"):
            import torch
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if (int(dev[5:]) if ":" in dev else 0) >= count:
                print(f"--{name.replace('_', '-')}: {dev} requested but {count} CUDA device(s) are visible",
                      file=sys.stderr)
                return 2
    if not args.tiny and not Path(args.config).is_file():
        print(f"--config: no such file: {args.config}", file=sys.stderr)
        return 2
    os.environ["NCCL_NVLS_ENABLE"] = "0"          # inherited by the speech process
    return Placement(args).run()


if __name__ == "__main__":
    sys.exit(main())
