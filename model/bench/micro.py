"""Micro-benchmarks of the fast path's pieces (GPU only), to steer tuning.

Contract: ``run_micro(backend, vision)`` times everything inside CUDA graphs (events around
replays), so launch overhead is out and back-to-back kernels behave as in the real step:
* attention over 15,360 cached tokens for decode (1 row) and for a chunk (316 rows), 36
  calls on the 36 layers' caches per graph, over a sweep of split/tile/warp/stage settings;
* the decode GEMVs per weight shape (36 layers' weights): cuBLAS vs the fused Triton GEMV;
* one whole decode step (15,360 tokens): the default path, the same with cuBLAS for every
  projection, and the fused-GEMV path;
* one whole 316-row chunk forward at 0 and at 15,000 cached tokens;
* the vision encoder graph alone.
Returns a JSON-ready dict. It overwrites cache slot 0 of ``backend``: run it last.
``run_variants(backend)`` times whole steps under other kernel options (fused gate/up GEMV,
programmatic dependent launch, the down GEMV in Triton, attention splits); same caveat.
"""
from __future__ import annotations

import torch

from model.bench.checks import Partials
from model.fast.gemv import gemv
from model.fast.torch_ops import Meta
from model.fast.triton_ops import TritonOps

CTX = 15360
GEMV_SWEEP = ((8, 1024, 8, 3), (16, 512, 4, 4), (32, 512, 8, 3), (8, 2048, 8, 2), (16, 1024, 8, 4),
              (4, 1024, 4, 3), (64, 256, 8, 3))
DECODE_SWEEP = [dict(decode_splits=s, decode_block_n=bn, decode_warps=w, decode_stages=st)
                for s, bn, w, st in ((32, 64, 4, 2), (32, 64, 4, 3), (32, 128, 4, 2), (16, 128, 4, 3),
                                     (64, 64, 4, 3), (64, 64, 2, 2), (64, 128, 4, 2), (128, 64, 4, 2))]
CHUNK_SWEEP = [dict(prefill_splits=s, prefill_block_m=bm, prefill_block_n=bn, prefill_warps=w,
                    prefill_stages=st)
               for s, bm, bn, w, st in ((4, 64, 64, 4, 2), (4, 64, 64, 4, 3), (4, 128, 64, 8, 2),
                                        (4, 128, 64, 8, 3), (4, 128, 128, 8, 2), (4, 64, 128, 4, 2),
                                        (2, 128, 64, 8, 3), (8, 128, 64, 8, 3), (4, 128, 32, 4, 3))]


def _graph_ms(fn, calls: int, replays: int = 5) -> float:
    """ms per call of ``fn(i)`` for i in range(calls), captured once, replayed."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(min(calls, 2)):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i)
    g.replay()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    for _ in range(replays):
        g.replay()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / (replays * calls)


def _fill_slot0(backend) -> None:
    gen = torch.Generator(device=backend.device).manual_seed(0)
    for arena in (backend.k_arena, backend.v_arena):
        for i in range(arena.shape[0]):
            arena[i, 0, :, :CTX + 400].normal_(generator=gen)


def _attention_sweep(backend, rows, n_new, start, sweep):
    hq, d, nl = backend.hq, backend.d, len(backend.layers)
    q = torch.randn(rows, hq, d, device=backend.device, dtype=backend.dtype)
    out = torch.empty(rows, hq * d, device=backend.device, dtype=backend.dtype)
    meta = Meta(0, start, n_new, torch.tensor([0, start, n_new], device=backend.device))
    res = []
    for opts in sweep:
        ops = TritonOps(**opts)
        work = Partials(ops.attention_splits(rows, hq // backend.hkv) * rows * hq, d, backend.device)
        ms = _graph_ms(lambda i: ops.attention(q, backend.k_arena[i], backend.v_arena[i], meta, out, work), nl)
        flops = 4 * n_new * hq * (start + n_new) * d
        res.append({**opts, "ms_per_layer": ms, "kv_tb_per_s": 2 * (start + n_new) * backend.hkv * d * 2 / ms / 1e9,
                    "tflops": flops / ms / 1e9})
    return sorted(res, key=lambda r: r["ms_per_layer"])


def _step_ms(backend, rows, n_new, start, small: bool) -> float:
    b = backend.buf
    b.stage[:3].copy_(torch.tensor([0, start, n_new]))
    meta = Meta(0, start, n_new, b.stage[:3])
    run = backend._forward_small if small else backend._forward_rows

    def fn(_i):
        backend._rope_tables(rows)
        run(rows, False, meta)
    return _graph_ms(fn, 1, replays=10)


# round 3's defaults; then the defaults (round 4); then single switches off the defaults
ROUND3 = {"glu": False, "pdl": False, "decode_splits": 16, "gemv_lm_head": False, "pdl_trigger_first": False}
DECODE_VARIANTS = [ROUND3, {}, {"pdl": False}, {"glu": False}, {"gemv_lm_head": False},
                   {"pdl_trigger_first": False}, {"decode_splits": 16}]


def run_variants(backend, variants=DECODE_VARIANTS) -> list[dict]:
    """Whole steps in a graph (decode at 15,360 tokens, a 4-row turn end, a 316-row chunk at
    15,000) with each set of ``TritonOps`` options in place of the backend's own (restored
    after); a variant that fails (e.g. PDL not capturable here) records its error."""
    _fill_slot0(backend)
    own, out = backend.ops, []
    try:
        for opts in variants:
            row = {"options": opts}
            try:
                backend.ops = TritonOps(**opts)
                row["pdl_active"] = backend.ops.pdl
                row["decode_step_ms"] = _step_ms(backend, 1, 1, CTX, small=False)
                row["turn_end_step_ms"] = _step_ms(backend, 4, 3, CTX, small=False)
                row["chunk_forward_ms_ctx15000"] = _step_ms(backend, 320, 316, 15000, small=False)
            except Exception as e:       # noqa: BLE001 -- recorded, the sweep goes on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            out.append(row)
    finally:
        backend.ops = own
    return out


def run_micro(backend, vision) -> dict:
    _fill_slot0(backend)
    res = {"attention_decode": _attention_sweep(backend, 1, 1, CTX, DECODE_SWEEP),
           "attention_chunk": _attention_sweep(backend, 320, 316, CTX, CHUNK_SWEEP), "gemv": []}
    dev, dt, nl = backend.device, backend.dtype, len(backend.layers)
    meta_dev = torch.tensor([0, 0, 1], device=dev)
    for name in ("w_qkv", "w_o", "w_gu", "w_down"):
        ws = [getattr(ly, name) for ly in backend.layers]
        n, k = ws[0].shape
        x = torch.randn(1, k, device=dev, dtype=dt)
        y = torch.empty(1, n, device=dev, dtype=dt)
        cub = _graph_ms(lambda i: torch.mm(x, ws[i].t(), out=y), nl)
        tri = _graph_ms(lambda i: gemv(x, ws[i], y, meta_dev=meta_dev), nl)
        row = {"weight": name, "n": n, "k": k, "cublas_ms": cub, "triton_ms": tri,
               "cublas_tb_per_s": n * k * 2 / cub / 1e9, "triton_tb_per_s": n * k * 2 / tri / 1e9}
        for bn, bk, w, st in GEMV_SWEEP:
            t = _graph_ms(lambda i: gemv(x, ws[i], y, meta_dev=meta_dev, block_n=bn, block_k=bk,
                                         num_warps=w, num_stages=st), nl)
            row[f"triton_{bn}x{bk}_w{w}_s{st}_ms"] = t
        res["gemv"].append(row)
    res["decode_step_fused_ms"] = _step_ms(backend, 1, 1, CTX, small=True)
    res["decode_step_default_ms"] = _step_ms(backend, 1, 1, CTX, small=False)
    was = getattr(backend.ops, "gemv_m1", False)
    backend.ops.gemv_m1 = False
    res["decode_step_cublas_ms"] = _step_ms(backend, 1, 1, CTX, small=False)
    backend.ops.gemv_m1 = was
    res["turn_end_step_fused_ms"] = _step_ms(backend, 4, 3, CTX, small=True)
    res["chunk_forward_ms_ctx0"] = _step_ms(backend, 320, 316, 0, small=False)
    res["chunk_forward_ms_ctx15000"] = _step_ms(backend, 320, 316, 15000, small=False)
    plan = next(iter(vision.plans.values()))
    if plan.graph is not None:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        plan.graph.replay()
        a.record()
        for _ in range(10):
            plan.graph.replay()
        b.record()
        torch.cuda.synchronize()
        res["vision_graph_ms"] = a.elapsed_time(b) / 10
    return res
