"""Triton kernels of the fast LM backend (CUDA; also runs under ``TRITON_INTERPRET=1``).

Contract: ``TritonOps`` has the same methods, arguments and results as
``model.fast.torch_ops.TorchOps`` (the plain-torch twin that defines the math); every method
writes into buffers the caller owns, launches a fixed grid and reads the cache slot, the
cache length and the number of new rows from the device tensor ``meta.dev`` = int32
``[slot, start, n_new]``, so a sequence of calls can be captured in one CUDA graph and
replayed for any cache and any length. Rows at or beyond ``n_new`` are padding: computed
or skipped, never written into a cache.

Rounding follows the transformers Qwen3-VL text model op by op (residual adds, RMSNorm,
RoPE and SiLU round to the activation dtype where it does), so bf16 results track the
reference path closely. Attention is a split-K flash kernel over the live keys only
(``[0, start + row]``): each program owns one KV head, the ``G`` query heads sharing it
packed as rows, and one slice of the keys; a second kernel merges the slices.
"""
from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError as exc:  # the CPU product path never imports this module
    raise ImportError("model.fast.triton_ops needs Triton (ships with CUDA builds of torch)") from exc

from model.fast.gemv import NORM, RESIDUAL, SILU, gemv, gemv_glu  # noqa: E402
from model.fast.pdl import OFF, TRIGGER_FIRST, WAIT_FIRST, pdl_enter, pdl_launch, pdl_supported  # noqa: E402


def _p2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


# --------------------------------------------------------------------------- kernels
@triton.jit
def _add_rmsnorm_kernel(Hin, Delta, Ds, W, Hout, Xn, Meta, eps, N,
                        HAS_DELTA: tl.constexpr, HAS_DS: tl.constexpr,
                        ROW_FROM_META: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    if ROW_FROM_META:
        row = tl.load(Meta + 2) - 1
        orow = 0
    else:
        row = tl.program_id(0)
        orow = row
    cols = tl.arange(0, BLOCK)
    m = cols < N
    h = tl.load(Hin + row * N + cols, mask=m, other=0.0)
    dt = h.dtype
    if HAS_DELTA:
        d = tl.load(Delta + row * N + cols, mask=m, other=0.0)
        h = (h.to(tl.float32) + d.to(tl.float32)).to(dt)
    if HAS_DS:
        s = tl.load(Ds + row * N + cols, mask=m, other=0.0)
        h = (h.to(tl.float32) + s.to(tl.float32)).to(dt)
    if not ROW_FROM_META:
        tl.store(Hout + row * N + cols, h, mask=m)
    hf = h.to(tl.float32)
    var = tl.sum(hf * hf, 0) / N
    y = (hf * (1.0 / tl.sqrt(var + eps))).to(dt)
    w = tl.load(W + cols, mask=m, other=0.0)
    tl.store(Xn + orow * N + cols, (w.to(tl.float32) * y.to(tl.float32)).to(dt), mask=m)


@triton.jit
def _norm_rope(x1, x2, w1, w2, c, s, eps, D: tl.constexpr):
    dt = c.dtype
    a = x1.to(tl.float32)
    b = x2.to(tl.float32)
    rstd = 1.0 / tl.sqrt((tl.sum(a * a, 0) + tl.sum(b * b, 0)) / D + eps)
    a = (w1.to(tl.float32) * (a * rstd).to(dt).to(tl.float32)).to(dt).to(tl.float32)
    b = (w2.to(tl.float32) * (b * rstd).to(dt).to(tl.float32)).to(dt).to(tl.float32)
    cf = c.to(tl.float32)
    sf = s.to(tl.float32)
    o1 = ((a * cf).to(dt).to(tl.float32) + (-b * sf).to(dt).to(tl.float32)).to(dt)
    o2 = ((b * cf).to(dt).to(tl.float32) + (a * sf).to(dt).to(tl.float32)).to(dt)
    return o1, o2


@triton.jit
def _qk_rope_store_kernel(QKV, Cos, Sin, QW, KW, Qo, Kc, Vc, Meta, eps,
                          stride_qkv, stride_slot, stride_head,
                          HQ: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    t = tl.program_id(0)
    hd = tl.program_id(1)
    slot = tl.load(Meta)
    start = tl.load(Meta + 1)
    n_new = tl.load(Meta + 2)
    HALF: tl.constexpr = D // 2
    j = tl.arange(0, HALF)
    src = QKV + t * stride_qkv + hd * D
    x1 = tl.load(src + j)
    x2 = tl.load(src + HALF + j)
    live = (j * 0 + t) < n_new
    pos = start + t
    if hd < HQ:
        c = tl.load(Cos + t * HALF + j)
        s = tl.load(Sin + t * HALF + j)
        o1, o2 = _norm_rope(x1, x2, tl.load(QW + j), tl.load(QW + HALF + j), c, s, eps, D)
        dst = Qo + (t * HQ + hd) * D
        tl.store(dst + j, o1)
        tl.store(dst + HALF + j, o2)
    elif hd < HQ + HKV:
        c = tl.load(Cos + t * HALF + j)
        s = tl.load(Sin + t * HALF + j)
        o1, o2 = _norm_rope(x1, x2, tl.load(KW + j), tl.load(KW + HALF + j), c, s, eps, D)
        dst = Kc + slot * stride_slot + (hd - HQ) * stride_head + pos * D
        tl.store(dst + j, o1, mask=live)
        tl.store(dst + HALF + j, o2, mask=live)
    else:
        dst = Vc + slot * stride_slot + (hd - HQ - HKV) * stride_head + pos * D
        tl.store(dst + j, x1, mask=live)
        tl.store(dst + HALF + j, x2, mask=live)


@triton.jit
def _attn_block(q, kb, vb, k0, hi, lim, m_i, l_i, acc, scale_log2, d,
                BLOCK_N: tl.constexpr, D: tl.constexpr, MASKED: tl.constexpr,
                UPCAST_DOT: tl.constexpr, IEEE: tl.constexpr):
    kn = k0 + tl.arange(0, BLOCK_N)
    if MASKED:
        kmask = kn < hi
        k = tl.load(kb + kn[:, None] * D + d[None, :], mask=kmask[:, None], other=0.0)
        v = tl.load(vb + kn[:, None] * D + d[None, :], mask=kmask[:, None], other=0.0)
    else:
        k = tl.load(kb + kn[:, None] * D + d[None, :])
        v = tl.load(vb + kn[:, None] * D + d[None, :])
    if UPCAST_DOT:
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32))) * scale_log2
    elif IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2
    else:
        s = tl.dot(q, tl.trans(k)) * scale_log2
    if MASKED:
        ok = (kn[None, :] <= lim[:, None]) & kmask[None, :]
        s = tl.where(ok, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_use[:, None])
    alpha = tl.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    if UPCAST_DOT:
        pv = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32))
    elif IEEE:
        pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc * alpha[:, None] + pv


@triton.jit
def _attn_split_kernel(Q, Kc, Vc, Meta, Op, Mp, Lp, scale_log2,
                       stride_slot, stride_head, stride_psplit, stride_msplit,
                       HQ: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NSPLIT: tl.constexpr,
                       UPCAST_DOT: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    kvh = tl.program_id(0)
    mb = tl.program_id(1)
    sp = tl.program_id(2)
    slot = tl.load(Meta)
    start = tl.load(Meta + 1)
    n_new = tl.load(Meta + 2)
    total = start + n_new
    r = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    tok = r // G
    qh = kvh * G + r % G
    row_ok = tok < n_new
    d = tl.arange(0, D)
    q = tl.load(Q + (tok * HQ + qh)[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)
    per = tl.cdiv(tl.cdiv(total, NSPLIT), BLOCK_N) * BLOCK_N
    lo = sp * per
    last_tok = tl.minimum((mb * BLOCK_M + BLOCK_M - 1) // G, n_new - 1)
    hi = tl.minimum(lo + per, start + last_tok + 1)
    # keys below start + (first token of the block) + 1 are visible to every row: no mask
    full = tl.minimum(hi, start + (mb * BLOCK_M) // G + 1)
    full_end = lo + tl.maximum(full - lo, 0) // BLOCK_N * BLOCK_N
    lim = start + tok
    kb = Kc + slot * stride_slot + kvh * stride_head
    vb = Vc + slot * stride_slot + kvh * stride_head
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for k0 in range(lo, full_end, BLOCK_N):
        m_i, l_i, acc = _attn_block(q, kb, vb, k0, hi, lim, m_i, l_i, acc, scale_log2, d,
                                    BLOCK_N, D, False, UPCAST_DOT, IEEE)
    for k0 in range(full_end, hi, BLOCK_N):
        m_i, l_i, acc = _attn_block(q, kb, vb, k0, hi, lim, m_i, l_i, acc, scale_log2, d,
                                    BLOCK_N, D, True, UPCAST_DOT, IEEE)
    orow = tok * HQ + qh
    tl.store(Op + sp * stride_psplit + orow[:, None] * D + d[None, :], acc, mask=row_ok[:, None])
    tl.store(Mp + sp * stride_msplit + orow, m_i, mask=row_ok)
    tl.store(Lp + sp * stride_msplit + orow, l_i, mask=row_ok)


@triton.jit
def _attn_combine_kernel(Op, Mp, Lp, Out, Meta, stride_psplit, stride_msplit,
                         HQ: tl.constexpr, D: tl.constexpr, NSPLIT: tl.constexpr,
                         SPLIT_P2: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    row = tl.program_id(0)
    n_new = tl.load(Meta + 2)
    valid = (row // HQ) < n_new
    sidx = tl.arange(0, SPLIT_P2)
    smask = (sidx < NSPLIT) & valid
    d = tl.arange(0, D)
    m = tl.load(Mp + sidx * stride_msplit + row, mask=smask, other=float("-inf"))
    l = tl.load(Lp + sidx * stride_msplit + row, mask=smask, other=0.0)
    mmax = tl.max(m, 0)
    w = tl.exp2(m - tl.where(mmax == float("-inf"), 0.0, mmax))
    w = tl.where(smask, w, 0.0)
    den = tl.sum(w * l, 0)
    o = tl.load(Op + sidx[:, None] * stride_psplit + row * D + d[None, :],
                mask=smask[:, None], other=0.0)
    num = tl.sum(o * w[:, None], 0)
    res = tl.where(den > 0.0, num / tl.where(den > 0.0, den, 1.0), 0.0)
    tl.store(Out + row * D + d, res.to(Out.dtype.element_ty))


@triton.jit
def _silu_mul_kernel(GU, Out, I, BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    row = tl.program_id(0)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = c < I
    g = tl.load(GU + row * 2 * I + c, mask=m, other=0.0)
    u = tl.load(GU + row * 2 * I + I + c, mask=m, other=0.0)
    dt = g.dtype
    gf = g.to(tl.float32)
    a = (gf / (1.0 + tl.exp(-gf))).to(dt)
    tl.store(Out + row * I + c, (a.to(tl.float32) * u.to(tl.float32)).to(dt), mask=m)


@triton.jit
def _vision_rope_kernel(QKV, Cos, Sin, Qo, Ko, HD, HALF, H: tl.constexpr, HP: tl.constexpr,
                        HALF_P: tl.constexpr):
    n = tl.program_id(0)
    hh = tl.arange(0, HP)
    j = tl.arange(0, HALF_P)
    m = (hh[:, None] < H) & (j[None, :] < HALF)
    c1 = tl.load(Cos + n * HD + j, mask=j < HALF, other=0.0)[None, :]
    c2 = tl.load(Cos + n * HD + HALF + j, mask=j < HALF, other=0.0)[None, :]
    s1 = tl.load(Sin + n * HD + j, mask=j < HALF, other=0.0)[None, :]
    s2 = tl.load(Sin + n * HD + HALF + j, mask=j < HALF, other=0.0)[None, :]
    for part in tl.static_range(2):
        src = QKV + n * 3 * H * HD + part * H * HD + hh[:, None] * HD + j[None, :]
        x1 = tl.load(src, mask=m, other=0.0)
        x2 = tl.load(src + HALF, mask=m, other=0.0)
        a, b = x1.to(tl.float32), x2.to(tl.float32)
        o1 = (a * c1 + (-b) * s1).to(x1.dtype)
        o2 = (b * c2 + a * s2).to(x1.dtype)
        dst = (Qo if part == 0 else Ko) + n * H * HD + hh[:, None] * HD + j[None, :]
        tl.store(dst, o1, mask=m)
        tl.store(dst + HALF, o2, mask=m)


@triton.jit
def _rope_tables_kernel(Pos, Sel, Inv, Cos, Sin, rows, scale, HALF: tl.constexpr, HP: tl.constexpr,
                        SCALED: tl.constexpr, LIBDEVICE: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    r = tl.program_id(0)
    j = tl.arange(0, HP)
    m = j < HALF
    sel = tl.load(Sel + j, mask=m, other=0)
    f = tl.load(Pos + sel * rows + r, mask=m, other=0).to(tl.float32) * tl.load(Inv + j, mask=m, other=0.0)
    if LIBDEVICE:       # accurate cosf/sinf as torch computes them (tl.cos may be approximate)
        c = libdevice.cos(f)
        s = libdevice.sin(f)
    else:               # the interpreter (numpy: accurate)
        c = tl.cos(f)
        s = tl.sin(f)
    if SCALED:
        c = c * scale
        s = s * scale
    tl.store(Cos + r * HALF + j, c.to(Cos.dtype.element_ty), mask=m)
    tl.store(Sin + r * HALF + j, s.to(Sin.dtype.element_ty), mask=m)


@triton.jit
def _greedy_pre_kernel(W, Tok, State, Stage, Emb, H, BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_enter(PDL)
    tok = tl.load(Tok)
    pos = tl.load(State)
    length = tl.load(State + 1)
    cols = tl.arange(0, BLOCK)
    m = cols < H
    tl.store(Emb + cols, tl.load(W + tok * H + cols, mask=m, other=0.0), mask=m)
    tl.store(Stage + 1, length)
    for k in tl.static_range(3):
        tl.store(Stage + 3 + k, pos)
    tl.store(State, pos + 1)
    tl.store(State + 1, length + 1)


def vision_rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int):
    """Rotary embedding of the vision encoder's q and k, read straight from the fused qkv
    projection ``(N, 3 * heads * hd)``; float32 math, like the reference. Returns q, k as
    ``(N, heads, hd)``."""
    n, width = qkv.shape
    hd = width // (3 * n_heads)
    q = torch.empty(n, n_heads, hd, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty_like(q)
    _vision_rope_kernel[(n,)](qkv, cos, sin, q, k, hd, hd // 2, H=n_heads, HP=_p2(n_heads),
                              HALF_P=_p2(hd // 2), num_warps=4)
    return q, k


# --------------------------------------------------------------------------- launchers
class TritonOps:
    """Kernel launchers; see ``model.fast.torch_ops.TorchOps`` for the meaning of each op.

    Attention settings are per kind of append: ``decode_*`` when the packed query rows
    (rows x heads per KV head) fit one 16-row tile (1-4 tokens), ``prefill_*`` otherwise.
    Defaults: the fastest settings of the in-graph sweeps on an H100 (docs/gpu.md, runs 2-3
    and round 4's variant runs): 8 decode splits; one-row GEMVs with K <= ``gemv_max_k``
    in Triton (``gemv_m1``, ``m1_block_k`` per loaded slice), the gate/up GEMV applying
    SiLU*up in its epilogue (``glu``), lm_head as a Triton GEMV writing float32
    (``gemv_lm_head``); PDL (``pdl``, where supported: sm_90+, not interpreted) for appends
    of at most ``pdl_max_rows`` rows, each kernel letting the next one launch before it
    waits (``pdl_trigger_first``). ``small_rows`` > 0 sends appends of that many rows or fewer through the fused Triton
    GEMVs (model/fast/gemv.py); off by default: inside a CUDA graph cuBLAS streamed the
    decode weights faster on the H100 (decode step 7.23 ms against 8.17 ms)."""

    def __init__(self, *, decode_splits: int = 8, decode_block_n: int = 128, decode_warps: int = 4,
                 decode_stages: int = 3, prefill_splits: int = 8, prefill_block_m: int = 128,
                 prefill_block_n: int = 64, prefill_warps: int = 8, prefill_stages: int = 3,
                 gemv_block_n: int = 16, gemv_block_k: int = 1024, gemv_warps: int = 8,
                 gemv_stages: int = 3, small_rows: int = 0, gemv_m1: bool = True,
                 gemv_max_k: int = 4096, glu: bool = True, glu_block_n: int = 2, pdl: bool = True,
                 pdl_max_rows: int = 4, pdl_trigger_first: bool = True, gemv_lm_head: bool = True,
                 m1_block_k: int = 1024, lm_head_block_n: int = 4):
        self.decode_splits, self.decode_block_n = decode_splits, decode_block_n
        self.decode_warps, self.decode_stages = decode_warps, decode_stages
        self.prefill_splits, self.prefill_block_m = prefill_splits, prefill_block_m
        self.prefill_block_n, self.prefill_warps, self.prefill_stages = prefill_block_n, prefill_warps, prefill_stages
        self.gemv_block_n, self.gemv_block_k = gemv_block_n, gemv_block_k
        self.gemv_warps, self.gemv_stages = gemv_warps, gemv_stages
        self.small_rows = small_rows
        self.gemv_m1, self.gemv_max_k, self.glu, self.glu_block_n = gemv_m1, gemv_max_k, glu, glu_block_n
        # the Triton interpreter (CPU tests) multiplies raw bits in a bf16 tl.dot: upcast there;
        # on a GPU a float32 dot would default to tf32, so float32 models ask for IEEE
        self.interpret = interpret = os.environ.get("TRITON_INTERPRET") == "1"
        self.upcast_dot = interpret
        # PDL (model/fast/pdl.py): only where the GPU and this Triton have it, never interpreted
        self.pdl = bool(pdl) and not interpret and pdl_supported()
        self.pdl_max_rows, self.gemv_lm_head, self.m1_block_k = pdl_max_rows, gemv_lm_head, m1_block_k
        self.lm_head_block_n = lm_head_block_n
        self.pdl_mode = TRIGGER_FIRST if pdl_trigger_first else WAIT_FIRST

    def _use_pdl(self, rows: int) -> int:
        """The PDL mode for an append of ``rows`` rows: on for at most ``pdl_max_rows``
        (decode, turn ends: there the launch gaps are a visible share of the step; a chunk's
        kernels are long), WAIT_FIRST or TRIGGER_FIRST (``pdl_trigger_first``)."""
        return self.pdl_mode if self.pdl and rows <= self.pdl_max_rows else OFF

    def _pdl(self, rows: int) -> dict:
        mode = self._use_pdl(rows)
        return dict(PDL=mode, **pdl_launch(mode))

    def rope_tables(self, pos, sel, inv_freq, scale, cos_out, sin_out):
        rows, half = cos_out.shape
        _rope_tables_kernel[(rows,)](pos, sel, inv_freq, cos_out, sin_out, rows, float(scale),
                                     HALF=half, HP=_p2(half), SCALED=scale != 1.0,
                                     LIBDEVICE=not self.interpret, num_warps=1,
                                     **self._pdl(rows))

    def greedy_pre(self, w_embed, tok, state, stage, emb):
        hidden = w_embed.shape[1]
        _greedy_pre_kernel[(1,)](w_embed, tok, state, stage, emb, hidden, BLOCK=_p2(hidden),
                                 num_warps=4, **self._pdl(1))

    def add_rmsnorm(self, h_in, delta, ds, w, eps, h_out, xn, meta):
        rows, n = h_in.shape
        blk = _p2(n)
        _add_rmsnorm_kernel[(rows,)](h_in, delta if delta is not None else h_in,
                                     ds if ds is not None else h_in, w, h_out, xn, meta.dev,
                                     eps, n, HAS_DELTA=delta is not None, HAS_DS=ds is not None,
                                     ROW_FROM_META=False, BLOCK=blk, num_warps=8 if blk >= 2048 else 4,
                                     **self._pdl(rows))

    def add_rmsnorm_last(self, h, delta, ds, w, eps, xn_last, meta):
        n = h.shape[1]
        blk = _p2(n)
        _add_rmsnorm_kernel[(1,)](h, delta, ds if ds is not None else h, w, h, xn_last, meta.dev,
                                  eps, n, HAS_DELTA=True, HAS_DS=ds is not None,
                                  ROW_FROM_META=True, BLOCK=blk, num_warps=8 if blk >= 2048 else 4,
                                  **self._pdl(h.shape[0]))

    def qk_rope_store(self, qkv, cos, sin, q_w, k_w, eps, q_out, k_cache, v_cache, meta):
        rows = qkv.shape[0]
        _slots, hkv, _t, d = k_cache.shape
        hq = q_out.shape[1]
        _qk_rope_store_kernel[(rows, hq + 2 * hkv)](
            qkv, cos, sin, q_w, k_w, q_out, k_cache, v_cache, meta.dev, eps,
            qkv.stride(0), k_cache.stride(0), k_cache.stride(1), HQ=hq, HKV=hkv, D=d, num_warps=1,
            **self._pdl(rows))

    def attention_splits(self, rows: int, group: int) -> int:
        return self.decode_splits if rows * group <= 16 else self.prefill_splits

    def attention(self, q, k_cache, v_cache, meta, out, work):
        rows, hq, d = q.shape
        hkv = k_cache.shape[1]
        g = hq // hkv
        if rows * g <= 16:
            bm, bn, nw, ns = 16, self.decode_block_n, self.decode_warps, self.decode_stages
        else:
            bm, bn = self.prefill_block_m, self.prefill_block_n
            nw, ns = self.prefill_warps, self.prefill_stages
        if q.dtype == torch.float32:          # float32 tiles are twice as big: fit shared memory
            bm, bn, ns = min(bm, 64), min(bn, 64), min(ns, 2)
        nsplit = self.attention_splits(rows, g)
        op, mp, lp = work.attention_partials(nsplit, rows * hq, d)
        grid = (hkv, triton.cdiv(rows * g, bm), nsplit)
        _attn_split_kernel[grid](q, k_cache, v_cache, meta.dev, op, mp, lp,
                                 (1.0 / math.sqrt(d)) * 1.4426950408889634,
                                 k_cache.stride(0), k_cache.stride(1), op.stride(0), mp.stride(0),
                                 HQ=hq, G=g, D=d, BLOCK_M=bm, BLOCK_N=bn, NSPLIT=nsplit,
                                 UPCAST_DOT=self.upcast_dot, IEEE=q.dtype == torch.float32,
                                 num_warps=nw, num_stages=ns, **self._pdl(rows))
        _attn_combine_kernel[(rows * hq,)](op, mp, lp, out, meta.dev, op.stride(0), mp.stride(0),
                                           HQ=hq, D=d, NSPLIT=nsplit, SPLIT_P2=_p2(nsplit),
                                           num_warps=4, **self._pdl(rows))

    def silu_mul(self, gu, out):
        rows, inter = out.shape
        blk = min(1024, _p2(inter))
        _silu_mul_kernel[(rows, triton.cdiv(inter, blk))](gu, out, inter, BLOCK=blk, num_warps=4,
                                                          **self._pdl(rows))

    @staticmethod
    def vision_rope(qkv, cos, sin, n_heads):
        return vision_rope(qkv, cos, sin, n_heads)

    def _one_row(self, x, w) -> bool:
        return self.gemv_m1 and x.shape[0] == 1 and w.shape[1] <= self.gemv_max_k

    def linear(self, x, w, out, meta):
        """``out = x @ w.T``: one-row products with K <= ``gemv_max_k`` (4096: q/k/v, o and
        gate/up, not down, K = 12288) through the Triton GEMV with 4-row weight tiles
        (in-graph on the H100, 7-10% faster than cuBLAS there), everything else cuBLAS."""
        if self._one_row(x, w):
            gemv(x, w, out, meta_dev=meta.dev, block_n=4, block_k=self.m1_block_k, num_warps=4,
                 num_stages=3, pdl=self._use_pdl(1))
        else:
            torch.mm(x, w.t(), out=out)

    def linear_silu(self, x, w_gu, gu, act, meta):
        """``act = silu(x @ w_gate.T) * (x @ w_up.T)`` (``gu`` is scratch). With ``glu`` a
        one-row product is one GEMV whose epilogue applies the activation (no ``gu`` round
        trip, one launch fewer); otherwise ``linear`` then ``silu_mul``."""
        if self.glu and self._one_row(x, w_gu):
            gemv_glu(x, w_gu, act, block_n=self.glu_block_n, block_k=self.m1_block_k, num_warps=4, num_stages=3,
                     pdl=self._use_pdl(1))
        else:
            self.linear(x, w_gu, gu, meta)
            self.silu_mul(gu, act)

    def lm_head(self, xn_last, w, logits, logits32, meta):
        """``logits32 = float(round(xn_last @ w.T))``: cuBLAS into ``logits`` then a copy, or
        with ``gemv_lm_head`` the Triton GEMV writing float32 straight away (same rounding)."""
        if self.gemv_lm_head:
            gemv(xn_last, w, logits32[None], meta_dev=meta.dev, block_n=self.lm_head_block_n,
                 block_k=1024, num_warps=4, num_stages=3, pdl=self._use_pdl(1))
        else:
            torch.mm(xn_last, w.t(), out=logits)
            logits32.copy_(logits[0])

    # ---- fused GEMV steps of the small-row path (model.fast.gemv)
    def _gemv(self, x, w, out, meta, **kw):
        gemv(x, w, out, meta_dev=meta.dev, block_n=self.gemv_block_n, block_k=self.gemv_block_k,
             num_warps=self.gemv_warps, num_stages=self.gemv_stages, pdl=self._use_pdl(x.shape[0]), **kw)

    def norm_linear(self, h, norm_w, w, eps, out, meta):
        self._gemv(h, w, out, meta, pro=NORM, norm_w=norm_w, eps=eps)

    def linear_residual(self, x, w, h, ds, meta):
        self._gemv(x, w, h, meta, epi=RESIDUAL, ds=ds)

    def silu_linear_residual(self, gu, w, h, ds, meta):
        self._gemv(gu, w, h, meta, pro=SILU, epi=RESIDUAL, ds=ds)

    def norm_linear_last(self, h, norm_w, w, eps, out32, meta):
        self._gemv(h, w, out32, meta, pro=NORM, norm_w=norm_w, eps=eps, last_row=True)
