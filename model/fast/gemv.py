"""Fused GEMV kernel of the fast LM backend for appends of at most 4 rows (decode, turn ends).

Contract: ``gemv(x, w, out, ...)`` computes ``round(x' @ w.T)`` for ``M <= 4`` rows of
``x`` where the prologue ``x'`` is ``x`` itself, ``RMSNorm(x) * norm_w`` (rounded like the
reference) or ``silu(x[:, :K]) * x[:, K:]`` (the MLP activation, rounded like the
reference); the epilogue either stores the result (optionally as float32 of the rounded
value, from the row ``n_new - 1`` given in ``meta``) or adds it into the residual stream
``h`` in place, then adds a deepstack row (each add rounded). One launch replaces a
norm or activation kernel, a cuBLAS GEMV and a residual-add kernel; at M = 1 the plain
GEMV streamed weights 7-12% faster than cuBLAS on an H100 (notes in docs/gpu.md).
Each program owns ``BLOCK_N`` output columns and reads the whole activation rows (from L2).
"""
from __future__ import annotations

import triton
import triton.language as tl

from model.fast.pdl import pdl_enter, pdl_launch

PLAIN, NORM, SILU = 0, 1, 2
STORE, RESIDUAL = 0, 1


@triton.jit
def _gemv_tile(acc, w, xrow, k0, mmask, NW, rstd, K, PRO: tl.constexpr, BLOCK_K: tl.constexpr):
    """``acc += w * x'`` for one ``BLOCK_K`` slice of the activation rows (prologue applied)."""
    dt = w.dtype
    rk = k0 + tl.arange(0, BLOCK_K)
    xr = tl.load(xrow + rk[None, :], mask=mmask[:, None], other=0.0)
    if PRO == 1:
        y = (xr.to(tl.float32) * rstd[:, None]).to(dt)
        nw = tl.load(NW + rk)
        xr = (nw.to(tl.float32)[None, :] * y.to(tl.float32)).to(dt)
    elif PRO == 2:
        u = tl.load(xrow + K + rk[None, :], mask=mmask[:, None], other=0.0)
        gf = xr.to(tl.float32)
        a = (gf / (1.0 + tl.exp(-gf))).to(dt)
        xr = (a.to(tl.float32) * u.to(tl.float32)).to(dt)
    return acc + w.to(tl.float32)[None, :, :] * xr.to(tl.float32)[:, None, :]


@triton.jit
def _gemv_kernel(X, W, Y, NW, Ds, Meta, eps, N, K, stride_x, stride_y,
                 M: tl.constexpr, MP: tl.constexpr, PRO: tl.constexpr, EPI: tl.constexpr,
                 HAS_DS: tl.constexpr, LAST_ROW: tl.constexpr, OUT_F32: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rn < N
    rk0 = tl.arange(0, BLOCK_K)
    # the first weight tile does not depend on the previous kernel: load it before waiting
    w0 = tl.load(W + rn[:, None] * K + rk0[None, :], mask=nmask[:, None], other=0.0)
    pdl_enter(PDL)
    rm = tl.arange(0, MP)
    if LAST_ROW:
        rows = tl.load(Meta + 2) - 1 + rm * 0
    else:
        rows = rm
    mmask = rm < M
    xrow = X + rows[:, None] * stride_x
    dt = X.dtype.element_ty
    rstd = tl.zeros([MP], tl.float32)
    if PRO == 1:
        ss = tl.zeros([MP], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            xv = tl.load(xrow + rk[None, :], mask=mmask[:, None], other=0.0).to(tl.float32)
            ss += tl.sum(xv * xv, 1)
        rstd = 1.0 / tl.sqrt(ss / K + eps)
    acc = _gemv_tile(tl.zeros([MP, BLOCK_N, BLOCK_K], tl.float32), w0, xrow, 0, mmask, NW, rstd,
                     K, PRO, BLOCK_K)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(W + rn[:, None] * K + rk[None, :], mask=nmask[:, None], other=0.0)
        acc = _gemv_tile(acc, w, xrow, k0, mmask, NW, rstd, K, PRO, BLOCK_K)
    res = tl.sum(acc, 2).to(dt)
    omask = mmask[:, None] & nmask[None, :]
    if EPI == 0:
        if LAST_ROW:
            optr = Y + rm[:, None] * stride_y + rn[None, :]
        else:
            optr = Y + rows[:, None] * stride_y + rn[None, :]
        if OUT_F32:
            tl.store(optr, res.to(tl.float32), mask=omask)
        else:
            tl.store(optr, res, mask=omask)
    else:
        hptr = Y + rows[:, None] * stride_y + rn[None, :]
        h = tl.load(hptr, mask=omask, other=0.0)
        h = (h.to(tl.float32) + res.to(tl.float32)).to(dt)
        if HAS_DS:
            d = tl.load(Ds + rows[:, None] * stride_y + rn[None, :], mask=omask, other=0.0)
            h = (h.to(tl.float32) + d.to(tl.float32)).to(dt)
        tl.store(hptr, h, mask=omask)


@triton.jit
def _gemv_glu_kernel(X, W, Y, N, K, stride_x, stride_y, M: tl.constexpr, MP: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    """``Y = silu(X @ Wg.T) * (X @ Wu.T)`` with ``W = [Wg; Wu]`` (2N rows): each program owns
    ``BLOCK_N`` outputs and streams their gate rows and their up rows (rounded like the
    reference: both products to the activation dtype, SiLU rounded, then the product)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rn < N
    rk0 = tl.arange(0, BLOCK_K)
    wg = tl.load(W + rn[:, None] * K + rk0[None, :], mask=nmask[:, None], other=0.0)
    wu = tl.load(W + (N + rn)[:, None] * K + rk0[None, :], mask=nmask[:, None], other=0.0)
    pdl_enter(PDL)
    rm = tl.arange(0, MP)
    mmask = rm < M
    xrow = X + rm[:, None] * stride_x
    dt = X.dtype.element_ty
    zero = tl.zeros([MP], tl.float32)
    acc_g = _gemv_tile(tl.zeros([MP, BLOCK_N, BLOCK_K], tl.float32), wg, xrow, 0, mmask, X, zero,
                       K, 0, BLOCK_K)
    acc_u = _gemv_tile(tl.zeros([MP, BLOCK_N, BLOCK_K], tl.float32), wu, xrow, 0, mmask, X, zero,
                       K, 0, BLOCK_K)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        wg = tl.load(W + rn[:, None] * K + rk[None, :], mask=nmask[:, None], other=0.0)
        wu = tl.load(W + (N + rn)[:, None] * K + rk[None, :], mask=nmask[:, None], other=0.0)
        acc_g = _gemv_tile(acc_g, wg, xrow, k0, mmask, X, zero, K, 0, BLOCK_K)
        acc_u = _gemv_tile(acc_u, wu, xrow, k0, mmask, X, zero, K, 0, BLOCK_K)
    g = tl.sum(acc_g, 2).to(dt).to(tl.float32)
    u = tl.sum(acc_u, 2).to(dt)
    a = (g / (1.0 + tl.exp(-g))).to(dt)
    omask = mmask[:, None] & nmask[None, :]
    tl.store(Y + rm[:, None] * stride_y + rn[None, :], (a.to(tl.float32) * u.to(tl.float32)).to(dt),
             mask=omask)


def _p2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _block_k(block_k: int, mp: int, k: int) -> int:
    bk = min(block_k // mp, _p2(k))
    while k % bk:
        bk //= 2
    return bk


def gemv(x, w, out, *, meta_dev, pro=PLAIN, epi=STORE, norm_w=None, eps=0.0, ds=None,
         last_row=False, block_n=16, block_k=1024, num_warps=8, num_stages=3, pdl=0) -> None:
    """``out`` is the result (STORE) or the residual stream ``h`` (RESIDUAL). ``pdl``: the
    PDL mode (``model.fast.pdl``); the first ``block_k`` slice of each program's weight rows
    is loaded before the wait (all of them when ``block_k >= K``)."""
    m = 1 if last_row else x.shape[0]
    n, k = w.shape
    mp = _p2(m)
    bk = _block_k(block_k, mp, k)
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, w, out, norm_w if norm_w is not None else w, ds if ds is not None else out, meta_dev,
        eps, n, k, x.stride(0), out.stride(0) if out.dim() == 2 else 0,
        M=m, MP=mp, PRO=pro, EPI=epi, HAS_DS=ds is not None, LAST_ROW=last_row,
        OUT_F32=out.dtype != x.dtype, BLOCK_N=block_n, BLOCK_K=bk, PDL=pdl,
        num_warps=num_warps, num_stages=num_stages, **pdl_launch(pdl))


def gemv_glu(x, w, out, *, block_n=4, block_k=1024, num_warps=4, num_stages=3, pdl=0) -> None:
    """``out (M, N) = silu(x @ w[:N].T) * (x @ w[N:].T)`` for ``M <= 4`` rows, ``w (2N, K)``."""
    m, k = x.shape
    n = out.shape[1]
    mp = _p2(m)
    _gemv_glu_kernel[(triton.cdiv(n, block_n),)](
        x, w, out, n, k, x.stride(0), out.stride(0), M=m, MP=mp, BLOCK_N=block_n,
        BLOCK_K=_block_k(block_k, mp, k), PDL=pdl, num_warps=num_warps, num_stages=num_stages,
        **pdl_launch(pdl))
