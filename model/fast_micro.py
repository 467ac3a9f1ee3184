"""Micro-benchmarks of the fast path's pieces (GPU only), to steer tuning.

Contract: ``run_micro(backend)`` times, with CUDA events
(``triton.testing.do_bench``, median, L2 flushed between runs): the split-K attention for
decode (1 row) and for a chunk (316 rows) at ~15k cached tokens over its split/block
settings; every decode GEMV shape through cuBLAS and through a plain Triton GEMV over a
few tile shapes; the chunk-prefill GEMMs; and the sum of cuBLAS GEMV times of one decode
step against the replay of the captured decode graph (the rest is the fused small kernels,
attention and launch gaps). Returns a JSON-ready dict.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from model.fast_checks import Partials
from model.fast_torch import Meta
from model.fast_triton import TritonOps


@triton.jit
def _gemv_kernel(W, X, Y, N, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(W + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0)
        x = tl.load(X + rk)
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    tl.store(Y + rn, tl.sum(acc, 1).to(Y.dtype.element_ty), mask=rn < N)


GEMV_CONFIGS = [(8, 512, 4, 3), (16, 512, 4, 3), (32, 256, 4, 4), (16, 1024, 8, 3), (64, 128, 4, 4),
                (4, 1024, 4, 4)]


def _ms(fn) -> float:
    return float(do_bench(fn, warmup=10, rep=60, return_mode="median"))


def _attention(backend, rows, n_new, start, options):
    dev, dt = backend.device, backend.dtype
    hq, hkv, d = backend.hq, backend.hkv, backend.d
    ops = TritonOps(**options)
    tmax = start + rows + 64
    kc = torch.randn(1, hkv, tmax, d, device=dev, dtype=dt)
    vc = torch.randn_like(kc)
    q = torch.randn(rows, hq, d, device=dev, dtype=dt)
    out = torch.empty(rows, hq * d, device=dev, dtype=dt)
    meta = Meta(0, start, n_new, torch.tensor([0, start, n_new], device=dev))
    work = Partials(max(ops.decode_splits, ops.prefill_splits) * rows * hq, d, dev)
    ms = _ms(lambda: ops.attention(q, kc, vc, meta, out, work))
    gb = 2 * (start + n_new) * hkv * d * kc.element_size() / 1e9
    return {"options": options, "ms": ms, "kv_gb_per_s": gb / ms * 1e3}


def run_micro(backend) -> dict:
    res: dict = {"attention_decode": [], "attention_chunk": [], "gemv": [], "gemm_chunk": []}
    ctx = 15360
    for splits in (16, 32, 64, 128):
        for bn in (64, 128):
            res["attention_decode"].append(_attention(backend, 1, 1, ctx, dict(decode_splits=splits, block_n=bn)))
    for splits in (1, 2, 4, 8):
        for bm in (64, 128):
            res["attention_chunk"].append(_attention(backend, 336, 316, ctx,
                                                     dict(prefill_splits=splits, prefill_block_m=bm)))
    ly = backend.layers[0]
    dev, dt = backend.device, backend.dtype
    shapes = {"qkv": ly.w_qkv, "o": ly.w_o, "gate_up": ly.w_gu, "down": ly.w_down, "lm_head": backend.w_lm}
    total_cublas = 0.0
    for name, w in shapes.items():
        n, k = w.shape
        x = torch.randn(1, k, device=dev, dtype=dt)
        y = torch.empty(1, n, device=dev, dtype=dt)
        cub = _ms(lambda: torch.mm(x, w.t(), out=y))
        row = {"shape": name, "n": n, "k": k, "cublas_ms": cub, "cublas_gb_per_s": w.numel() * 2 / cub / 1e6}
        best = None
        for bn, bk, warps, stages in GEMV_CONFIGS:
            if k % bk:
                continue
            grid = (triton.cdiv(n, bn),)
            t = _ms(lambda: _gemv_kernel[grid](w, x, y, n, k, BLOCK_N=bn, BLOCK_K=bk,
                                               num_warps=warps, num_stages=stages))
            if best is None or t < best[0]:
                best = (t, (bn, bk, warps, stages))
        ref = x.float() @ w.float().t()
        _gemv_kernel[(triton.cdiv(n, best[1][0]),)](w, x, y, n, k, BLOCK_N=best[1][0], BLOCK_K=best[1][1],
                                                    num_warps=best[1][2], num_stages=best[1][3])
        row.update(triton_ms=best[0], triton_config=best[1], triton_gb_per_s=w.numel() * 2 / best[0] / 1e6,
                   triton_rel_err=((y.float() - ref).norm() / ref.norm()).item())
        res["gemv"].append(row)
        total_cublas += cub * (len(backend.layers) if name != "lm_head" else 1)
        xm = torch.randn(336, k, device=dev, dtype=dt)
        ym = torch.empty(336, n, device=dev, dtype=dt)
        g = _ms(lambda: torch.mm(xm, w.t(), out=ym))
        res["gemm_chunk"].append({"shape": name, "ms": g, "tflops": 2 * 336 * n * k / g / 1e9})
    res["decode_gemv_sum_cublas_ms"] = total_cublas
    return res
