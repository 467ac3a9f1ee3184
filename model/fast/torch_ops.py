"""Plain-torch ops of the fast LM backend: the definition of its math, and its CPU path.

Contract: each method computes one fused step of a Qwen3-VL text decoder layer and writes
into buffers the caller owns; ``model.fast.triton_ops.TritonOps`` has the same methods and must
give the same results (tested under the Triton interpreter). ``meta`` carries the cache
slot, the cache length before this append (``start``) and the number of real rows
(``n_new``) as host ints (``meta.host``) and as a device tensor (``meta.dev``, used by the
kernels). Rows ``>= n_new`` are padding; they are never written into a cache.

The caches are per layer ``(slots, kv_heads, max_tokens, head_dim)`` tensors (K and V).
Rounding follows the transformers Qwen3-VL text model step by step: a bf16 residual add
rounds to bf16, RMSNorm normalises in float32, rounds, then multiplies by the weight,
RoPE multiplies and adds in the activation dtype, SiLU rounds before the product.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Meta:
    """Which cache slot, how long it was before this append, how many real rows."""
    slot: int
    start: int
    n_new: int
    dev: torch.Tensor | None = None   # int32 [slot, start, n_new] on the compute device

    @property
    def host(self) -> tuple[int, int, int]:
        return self.slot, self.start, self.n_new


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as the reference computes it: float32 statistics, round, then the weight."""
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return w * y


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split rotary embedding; ``cos``/``sin`` hold the first half (rows, head_dim/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c + (-x2) * s, x2 * c + x1 * s), dim=-1)


class TorchOps:
    """Eager reference implementations (any device, any dtype).

    ``small_rows``: appends of at most this many rows use the fused-GEMV orchestration
    (``norm_linear`` ...); 0 keeps the plain one. The CUDA ops use 4; tests set it to cover
    both orchestrations on the CPU."""

    def __init__(self, small_rows: int = 0):
        self.small_rows = small_rows

    def linear(self, x, w, out, meta):
        torch.mm(x, w.t(), out=out)

    def rope_tables(self, pos, sel, inv_freq, scale, cos_out, sin_out):
        """M-RoPE tables of the rows' ``(3, rows)`` positions: frequency ``j`` turns with
        the position row ``sel[j]`` (float32 angles, like the reference), rounded on store."""
        freqs = pos.index_select(0, sel).t().float() * inv_freq
        cos, sin = freqs.cos(), freqs.sin()
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        cos_out.copy_(cos)
        sin_out.copy_(sin)

    def greedy_pre(self, w_embed, tok, state, stage, emb):
        """A device greedy step's start: ``emb[0] = w_embed[tok]``; the text position
        ``state[0]`` on all three rows of a one-row stage, the cache length ``state[1]`` as
        the stage's start; then both advance by one for the next step."""
        torch.index_select(w_embed, 0, tok, out=emb[:1])
        stage[3:6].copy_(state[0:1].expand(3))
        stage[1:2].copy_(state[1:2])
        state.add_(1)

    def add_rmsnorm(self, h_in, delta, ds, w, eps, h_out, xn, meta):
        h = h_in if delta is None else h_in + delta
        if ds is not None:
            h = h + ds
        if h is not h_out:
            h_out.copy_(h)
        xn.copy_(rms_norm(h_out, w, eps))

    def add_rmsnorm_last(self, h, delta, ds, w, eps, xn_last, meta):
        row = meta.n_new - 1
        x = h[row] + delta[row]
        if ds is not None:
            x = x + ds[row]
        xn_last[0].copy_(rms_norm(x, w, eps))

    def qk_rope_store(self, qkv, cos, sin, q_w, k_w, eps, q_out, k_cache, v_cache, meta):
        slot, start, n = meta.host
        hq, d = q_out.shape[1], q_out.shape[2]
        hkv = k_cache.shape[1]
        rows = qkv.shape[0]
        q = qkv[:, :hq * d].view(rows, hq, d)
        k = qkv[:, hq * d:(hq + hkv) * d].view(rows, hkv, d)
        v = qkv[:, (hq + hkv) * d:].view(rows, hkv, d)
        q_out.copy_(rope(rms_norm(q, q_w, eps), cos, sin))
        k = rope(rms_norm(k, k_w, eps), cos, sin)
        k_cache[slot, :, start:start + n].copy_(k[:n].transpose(0, 1))
        v_cache[slot, :, start:start + n].copy_(v[:n].transpose(0, 1))

    def attention(self, q, k_cache, v_cache, meta, out, work):
        slot, start, n = meta.host
        rows, hq, d = q.shape
        hkv = k_cache.shape[1]
        total = start + n
        k = k_cache[slot, :, :total].float().repeat_interleave(hq // hkv, dim=0)  # (hq, T, d)
        v = v_cache[slot, :, :total].float().repeat_interleave(hq // hkv, dim=0)
        qf = q[:n].float().transpose(0, 1)                                       # (hq, n, d)
        s = qf @ k.transpose(1, 2) / d ** 0.5                                     # (hq, n, T)
        key = torch.arange(total, device=q.device)
        lim = start + torch.arange(n, device=q.device)
        s = s.masked_fill(key[None, None, :] > lim[None, :, None], float("-inf"))
        o = torch.softmax(s, dim=-1) @ v                                          # (hq, n, d)
        out[:n].copy_(o.transpose(0, 1).reshape(n, hq * d))
        if rows > n:
            out[n:].zero_()

    def silu_mul(self, gu, out):
        inter = out.shape[1]
        g, u = gu[:, :inter], gu[:, inter:]
        out.copy_(torch.nn.functional.silu(g) * u)

    def linear_silu(self, x, w_gu, gu, act, meta):
        self.linear(x, w_gu, gu, meta)
        self.silu_mul(gu, act)

    def lm_head(self, xn_last, w, logits, logits32, meta):
        torch.mm(xn_last, w.t(), out=logits)
        logits32.copy_(logits[0])

    # fused GEMV steps of the small-row path (same math as the steps above, composed)
    def norm_linear(self, h, norm_w, w, eps, out, meta):
        out.copy_(rms_norm(h, norm_w, eps) @ w.t())

    def linear_residual(self, x, w, h, ds, meta):
        h.copy_(h + x @ w.t())
        if ds is not None:
            h.copy_(h + ds)

    def silu_linear_residual(self, gu, w, h, ds, meta):
        inter = w.shape[1]
        self.linear_residual(torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:], w, h, ds, meta)

    def norm_linear_last(self, h, norm_w, w, eps, out32, meta):
        row = meta.n_new - 1
        out32.copy_((rms_norm(h[row:row + 1], norm_w, eps) @ w.t())[0])
