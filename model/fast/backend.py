"""FastBackend: the LMBackend for CUDA (static KV caches, fused kernels, CUDA graphs).

Contract (``model.backend.LMBackend``): ``new_cache()`` takes a cache from a fixed pool
(``pool_size`` caches of ``max_tokens`` each, allocated once), ``append`` adds ``L`` rows
and returns the float32 logits of the last one (a tensor the caller owns), ``length``,
``truncate`` and ``release`` (gives the cache back to the pool). ``load_kv`` fills a cache
from per-layer key/value tensors (for tests and the benchmark's same-cache check).

Design:
* Weights are the HF model's own. Q/K/V and gate/up are fused into one matrix each, in
  place: the HF modules' parameters become views into the fused tensors, so there is one
  copy and the HF model keeps working (the reference path runs on the same weights).
* One KV arena ``(layers, slots, kv_heads, max_tokens, head_dim)`` for K and for V; the
  slot, the cache length and the number of new rows travel in a device tensor, so one
  captured graph serves every cache at every length. Attention reads only live keys.
* Per layer: fused add+RMSNorm, q/k-norm+RoPE+KV-store, split-K attention and SiLU*up
  kernels (Triton) between the projections (cuBLAS; one-row products with K <= 4096 go
  through a Triton GEMV, faster in-graph on an H100: docs/gpu.md).
* Appends are padded to a bucket size (1, 2, 4, ..., 512 rows); on CUDA each bucket, with
  and without deepstack, is captured once as a CUDA graph at construction (warm-up), so an
  append is a few copies plus one graph replay. Longer appends run in 512-row pieces.
* Without CUDA (or ``use_graphs=False``) the same orchestration runs eagerly with the
  plain-torch ops (``model.fast.torch_ops``): that is how its math is unit-tested on the CPU.
  The CPU product path uses the reference backend, not this one.
* ``greedy(cache, position, bias, limit)`` starts a device-side greedy reply
  (model/fast/greedy.py): one more captured graph embeds the token held on the device, runs
  the one-row forward and writes ``argmax(logits + bias)`` back, so the host never stands
  between two steps.
Not thread-safe: one engine worker owns it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.fast.torch_ops import Meta, TorchOps

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 336, 352,
                   384, 448, 512)


@dataclass(eq=False)
class FastCache:
    """A handle on one slot of the KV arena."""
    slot: int
    length: int = 0
    live: bool = True


@dataclass
class _Layer:
    w_in: torch.Tensor
    w_qkv: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    w_o: torch.Tensor
    w_post: torch.Tensor
    w_gu: torch.Tensor
    w_down: torch.Tensor


def _spans_storage(ws: list[torch.Tensor]) -> bool:
    """True when the tensors lie back to back in one storage (already fused)."""
    if not all(w.is_contiguous() for w in ws):
        return False
    ptr, off = ws[0].untyped_storage().data_ptr(), ws[0].storage_offset()
    for w in ws:
        if w.untyped_storage().data_ptr() != ptr or w.storage_offset() != off:
            return False
        off += w.numel()
    return True


def fuse_linears(linears: list[torch.nn.Linear]) -> torch.Tensor:
    """One ``(sum of out features, in features)`` matrix for several bias-free linears.

    The modules' weights become views into it (no second copy); fusing again is free."""
    ws = [m.weight for m in linears]
    if any(m.bias is not None for m in linears):
        raise ValueError("FastBackend supports bias-free projections only (Qwen3-VL has none)")
    rows = sum(w.shape[0] for w in ws)
    if _spans_storage(ws):
        return torch.empty(0, dtype=ws[0].dtype, device=ws[0].device).set_(
            ws[0].untyped_storage(), ws[0].storage_offset(), (rows, ws[0].shape[1])).detach()
    fused = torch.cat([w.detach() for w in ws], 0)
    off = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = fused[off:off + n]
        off += n
    return fused


def text_parts(hf_model):
    """(text model, lm_head) of a Qwen3VLForConditionalGeneration."""
    return hf_model.model.language_model, hf_model.lm_head


class _Buffers:
    """Every tensor a forward touches, allocated once (graph capture needs fixed addresses)."""

    def __init__(self, *, rows, hidden, hq, hkv, d, inter, vocab, n_ds, max_parts, dtype, device):
        z = dict(dtype=dtype, device=device)
        self.emb = torch.zeros(rows, hidden, **z)
        self.stage = torch.zeros(3 + 3 * rows, dtype=torch.int64, device=device)
        self.ds = torch.zeros(max(n_ds, 1), rows, hidden, **z)
        self.h = torch.zeros(rows, hidden, **z)
        self.xn = torch.zeros(rows, hidden, **z)
        self.qkv = torch.zeros(rows, (hq + 2 * hkv) * d, **z)
        self.q = torch.zeros(rows, hq, d, **z)
        self.attn = torch.zeros(rows, hq * d, **z)
        self.delta = torch.zeros(rows, hidden, **z)
        self.gu = torch.zeros(rows, 2 * inter, **z)
        self.act = torch.zeros(rows, inter, **z)
        self.cos = torch.zeros(rows, d // 2, **z)
        self.sin = torch.zeros(rows, d // 2, **z)
        self.xn_last = torch.zeros(1, hidden, **z)
        self.logits = torch.zeros(1, vocab, **z)
        self.logits32 = torch.zeros(vocab, dtype=torch.float32, device=device)
        self.g_tok = torch.zeros(1, dtype=torch.int64, device=device)     # greedy runs
        self.g_state = torch.zeros(2, dtype=torch.int64, device=device)   # [position, length]
        self.g_bias = torch.zeros(vocab, dtype=torch.float32, device=device)
        self.g_scores = torch.zeros(vocab, dtype=torch.float32, device=device)
        self.op = torch.zeros(max_parts * d, dtype=torch.float32, device=device)
        self.mp = torch.zeros(max_parts, dtype=torch.float32, device=device)
        self.lp = torch.zeros(max_parts, dtype=torch.float32, device=device)

    def attention_partials(self, nsplit: int, nrows: int, d: int):
        n = nsplit * nrows
        return (self.op[:n * d].view(nsplit, nrows, d), self.mp[:n].view(nsplit, nrows),
                self.lp[:n].view(nsplit, nrows))


def unsupported(hf_model) -> str | None:
    """Why the Triton kernels cannot run this text stack (None: they can). Their head-dim
    tiles are ``tl.arange(0, D)`` and ``tl.dot`` blocks: a power of two, at least 16."""
    cfg = text_parts(hf_model)[0].config
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if d < 16 or d & (d - 1):
        return f"head dim {d} is not a power of two >= 16"
    return None


class FastBackend:
    """Static-cache, graph-captured Qwen3-VL text stack (see the module docstring)."""

    def __init__(self, hf_model, max_tokens: int, *, pool_size: int = 2,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS, use_graphs: bool | None = None,
                 kernel_options: dict | None = None, ops=None, pad_rows: bool | None = None):
        text, lm_head = text_parts(hf_model)
        cfg = text.config
        p = next(text.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.max_tokens, self.pool_size = int(max_tokens), int(pool_size)
        if self.max_tokens < 1 or self.pool_size < 1:
            raise ValueError("FastBackend: max_tokens and pool_size must be >= 1")
        self.hq, self.hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.hq
        self.hidden, self.inter, self.vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
        self.eps = float(cfg.rms_norm_eps)
        with torch.no_grad():
            self.layers = [self._layer(blk) for blk in text.layers]
        self.w_embed = text.embed_tokens.weight.detach()
        self.w_final = text.norm.weight.detach()
        self.w_lm = lm_head.weight.detach()
        rot = text.rotary_emb
        self.inv_freq = rot.inv_freq.detach().float().to(self.device)
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self.sel = self._mrope_rows(list(rot.mrope_section), self.d // 2)
        self.n_ds = len(getattr(hf_model.config.vision_config, "deepstack_visual_indexes", []) or [])
        if use_graphs is None:
            use_graphs = self.device.type == "cuda"
        self.use_graphs = bool(use_graphs)
        self.pad_rows = self.use_graphs if pad_rows is None else bool(pad_rows)
        if self.use_graphs and self.device.type != "cuda":
            raise ValueError("FastBackend: CUDA graphs need a CUDA model")
        if ops is not None:
            self.ops = ops
        elif self.device.type == "cuda":
            from model.fast.triton_ops import TritonOps
            why = unsupported(hf_model)
            if why:
                raise ValueError(f"FastBackend: the Triton kernels cannot run this model ({why})")
            self.ops = TritonOps(**(kernel_options or {}))
        else:
            self.ops = TorchOps()
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.max_rows = self.buckets[-1]
        nl = len(self.layers)
        shape = (nl, self.pool_size, self.hkv, self.max_tokens, self.d)
        self.k_arena = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.v_arena = torch.zeros(shape, dtype=self.dtype, device=self.device)
        parts = max(self._nsplit(b) * b * self.hq for b in self.buckets)
        self.buf = _Buffers(rows=self.max_rows, hidden=self.hidden, hq=self.hq, hkv=self.hkv,
                            d=self.d, inter=self.inter, vocab=self.vocab, n_ds=self.n_ds,
                            max_parts=parts, dtype=self.dtype, device=self.device)
        self._free = list(range(self.pool_size))
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self._greedy_graph: torch.cuda.CUDAGraph | None = None
        self._greedy_owner = None           # the GreedyRun whose state the buffers hold
        if self.use_graphs:
            self._capture_all()

    # ---------------------------------------------------------------- set-up
    def _layer(self, blk) -> _Layer:
        a, m = blk.self_attn, blk.mlp
        return _Layer(w_in=blk.input_layernorm.weight.detach(),
                      w_qkv=fuse_linears([a.q_proj, a.k_proj, a.v_proj]),
                      q_norm=a.q_norm.weight.detach(), k_norm=a.k_norm.weight.detach(),
                      w_o=a.o_proj.weight.detach(),
                      w_post=blk.post_attention_layernorm.weight.detach(),
                      w_gu=fuse_linears([m.gate_proj, m.up_proj]),
                      w_down=m.down_proj.weight.detach())

    def _mrope_rows(self, section: list[int], half: int) -> torch.Tensor:
        """Which position row (t=0, h=1, w=2) drives each rotary frequency (interleaved)."""
        rows = [0] * half
        for dim in (1, 2):
            for j in range(dim, min(section[dim] * 3, half), 3):
                rows[j] = dim
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _nsplit(self, rows: int) -> int:
        fn = getattr(self.ops, "attention_splits", None)
        return fn(rows, self.hq // self.hkv) if fn else 1

    def _capture_all(self) -> None:
        meta = Meta(0, 0, 1, self.buf.stage[:3])
        self.buf.stage[:3].copy_(torch.tensor([0, 0, 1]))   # warm-up writes row 0 of slot 0
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for b in self.buckets:              # warm-up: compiles every kernel variant
                for ds in (False, True):
                    self._forward(b, ds, meta)
            self._greedy_step(meta)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        pool = torch.cuda.graph_pool_handle()
        with torch.no_grad():
            for b in self.buckets:
                for ds in (False, True):
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, pool=pool):
                        self._forward(b, ds, meta)
                    self._graphs[(b, ds)] = g
            self._greedy_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._greedy_graph, pool=pool):
                self._greedy_step(meta)
        torch.cuda.synchronize()

    # ---------------------------------------------------------------- the forward
    def _rope_tables(self, rows: int) -> None:
        b = self.buf
        self.ops.rope_tables(b.stage[3:3 + 3 * rows].view(3, rows), self.sel, self.inv_freq,
                             self.rope_scale, b.cos[:rows], b.sin[:rows])

    def _forward(self, rows: int, has_ds: bool, meta: Meta) -> None:
        """All layers over buffer rows [0, rows); result in ``buf.logits32``."""
        self._rope_tables(rows)
        if rows <= getattr(self.ops, "small_rows", 0):
            self._forward_small(rows, has_ds, meta)
        else:
            self._forward_rows(rows, has_ds, meta)

    def _greedy_step(self, meta: Meta) -> None:
        """One greedy decode step with the token on the device (model/fast/greedy.py):
        ``greedy_pre`` embeds ``g_tok`` and stages the position and cache length held in
        ``g_state`` (advancing both), then the one-row forward and ``g_tok = argmax(logits
        + g_bias)``."""
        b = self.buf
        self.ops.greedy_pre(self.w_embed, b.g_tok, b.g_state, b.stage, b.emb)
        self._forward(1, False, meta)
        torch.add(b.logits32, b.g_bias, out=b.g_scores)
        torch.argmax(b.g_scores, 0, keepdim=True, out=b.g_tok)

    def _forward_small(self, rows: int, has_ds: bool, meta: Meta) -> None:
        """Few rows (decode, turn ends): weight-bound, so every projection is one fused GEMV
        (norm or activation in its prologue, residual add in its epilogue): 7 launches a layer."""
        b, ops, eps = self.buf, self.ops, self.eps
        h, qkv, q, attn, gu = b.h[:rows], b.qkv[:rows], b.q[:rows], b.attn[:rows], b.gu[:rows]
        h.copy_(b.emb[:rows])
        for i, ly in enumerate(self.layers):
            ops.norm_linear(h, ly.w_in, ly.w_qkv, eps, qkv, meta)
            ops.qk_rope_store(qkv, b.cos[:rows], b.sin[:rows], ly.q_norm, ly.k_norm, eps,
                              q, self.k_arena[i], self.v_arena[i], meta)
            ops.attention(q, self.k_arena[i], self.v_arena[i], meta, attn, b)
            ops.linear_residual(attn, ly.w_o, h, None, meta)
            ops.norm_linear(h, ly.w_post, ly.w_gu, eps, gu, meta)
            ds = b.ds[i, :rows] if has_ds and i < self.n_ds else None
            ops.silu_linear_residual(gu, ly.w_down, h, ds, meta)
        ops.norm_linear_last(h, self.w_final, self.w_lm, eps, b.logits32, meta)

    def _forward_rows(self, rows: int, has_ds: bool, meta: Meta) -> None:
        """The default path: GEMMs (cuBLAS; one-row GEMVs per ``ops.linear``) between fused
        norm / rope / attention kernels: 10 launches a layer."""
        b, ops, nl = self.buf, self.ops, len(self.layers)
        h, xn, delta = b.h[:rows], b.xn[:rows], b.delta[:rows]
        qkv, q, attn = b.qkv[:rows], b.q[:rows], b.attn[:rows]
        gu, act = b.gu[:rows], b.act[:rows]
        for i, ly in enumerate(self.layers):
            ds = b.ds[i - 1, :rows] if has_ds and 1 <= i <= self.n_ds else None
            ops.add_rmsnorm(b.emb[:rows] if i == 0 else h, None if i == 0 else delta, ds,
                            ly.w_in, self.eps, h, xn, meta)
            ops.linear(xn, ly.w_qkv, qkv, meta)
            ops.qk_rope_store(qkv, b.cos[:rows], b.sin[:rows], ly.q_norm, ly.k_norm, self.eps,
                              q, self.k_arena[i], self.v_arena[i], meta)
            ops.attention(q, self.k_arena[i], self.v_arena[i], meta, attn, b)
            ops.linear(attn, ly.w_o, delta, meta)
            ops.add_rmsnorm(h, delta, None, ly.w_post, self.eps, h, xn, meta)
            ops.linear_silu(xn, ly.w_gu, gu, act, meta)
            ops.linear(act, ly.w_down, delta, meta)
        ds = b.ds[nl - 1, :rows] if has_ds and self.n_ds >= nl else None
        ops.add_rmsnorm_last(h, delta, ds, self.w_final, self.eps, b.xn_last, meta)
        ops.lm_head(b.xn_last, self.w_lm, b.logits, b.logits32, meta)

    # ---------------------------------------------------------------- LMBackend
    def new_cache(self) -> FastCache:
        if not self._free:
            raise RuntimeError(f"FastBackend: all {self.pool_size} caches are in use "
                               "(release one, or build the backend with a larger pool_size)")
        return FastCache(slot=self._free.pop(0))

    def release(self, cache: FastCache) -> None:
        self._check(cache)
        cache.live = False
        self._free.append(cache.slot)

    def length(self, cache: FastCache) -> int:
        self._check(cache)
        return cache.length

    def truncate(self, cache: FastCache, n: int) -> None:
        self._check(cache)
        if not 0 <= n <= cache.length:
            raise ValueError(f"truncate: n must be in [0, {cache.length}], got {n}")
        cache.length = int(n)

    def load_kv(self, cache: FastCache, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Fill ``cache`` with per-layer ``(kv_heads, T, head_dim)`` keys and values."""
        self._check(cache)
        t = keys[0].shape[-2]
        if len(keys) != len(self.layers) or len(values) != len(self.layers) or t > self.max_tokens:
            raise ValueError("load_kv: need one (kv_heads, T <= max_tokens, head_dim) pair per layer")
        with torch.no_grad():
            for i, (k, v) in enumerate(zip(keys, values)):
                self.k_arena[i, cache.slot, :, :t].copy_(k.reshape(self.hkv, t, self.d))
                self.v_arena[i, cache.slot, :, :t].copy_(v.reshape(self.hkv, t, self.d))
        cache.length = t

    def greedy(self, cache: FastCache, position: int, bias: torch.Tensor | None = None,
               limit: int = 1 << 30):
        """A ``GreedyRun`` (model/fast/greedy.py) decoding into ``cache`` from ``position``."""
        from model.fast.greedy import GreedyRun
        self._check(cache)
        if bias is not None and tuple(bias.shape) != (self.vocab,):
            raise ValueError(f"greedy: bias must be ({self.vocab},), got {tuple(bias.shape)}")
        return GreedyRun(self, cache, position, bias, limit)

    def _greedy_load(self, slot: int, start: int, position: int, token: int, bias) -> None:
        b = self.buf
        pinned = self.device.type == "cuda"
        host = torch.tensor([slot, start, 1, position, start, token], dtype=torch.int64)
        if pinned:
            host = host.pin_memory()
        b.stage[:3].copy_(host[:3], non_blocking=pinned)
        b.g_state.copy_(host[3:5], non_blocking=pinned)
        b.g_tok.copy_(host[5:6], non_blocking=pinned)
        if bias is None:
            b.g_bias.zero_()
        else:
            b.g_bias.copy_(bias)

    def _greedy_launch(self, slot: int, start: int) -> None:
        if self._greedy_graph is not None:
            self._greedy_graph.replay()
        else:
            with torch.no_grad():
                self._greedy_step(Meta(slot, start, 1, self.buf.stage[:3]))

    def append(self, cache: FastCache, embeds: torch.Tensor, position_ids: torch.Tensor,
               visual_mask: torch.Tensor | None = None,
               deepstack: list[torch.Tensor] | None = None) -> torch.Tensor:
        self._check(cache)
        self._greedy_owner = None           # the stage is about to be overwritten
        n_all = embeds.shape[0]
        if embeds.dim() != 2 or embeds.shape[1] != self.hidden or n_all < 1:
            raise ValueError(f"append: embeds must be (L >= 1, {self.hidden}), got {tuple(embeds.shape)}")
        if tuple(position_ids.shape) != (3, n_all):
            raise ValueError(f"append: position_ids must be (3, {n_all}), got {tuple(position_ids.shape)}")
        if cache.length + n_all > self.max_tokens:
            raise ValueError(f"append: {cache.length} + {n_all} tokens exceed max_tokens={self.max_tokens}")
        vis = None
        if deepstack and visual_mask is not None:
            vis = visual_mask.to("cpu", torch.bool)
            if vis.shape != (n_all,) or int(vis.sum()) != deepstack[0].shape[0]:
                raise ValueError("append: visual_mask must be (L,) with one True per deepstack row")
            if len(deepstack) > self.n_ds:
                raise ValueError(f"append: {len(deepstack)} deepstack tensors, model takes {self.n_ds}")
        done = used = 0
        with torch.no_grad():
            while done < n_all:
                n = min(n_all - done, self.max_rows)
                feats = None
                if vis is not None and bool(vis[done:done + n].any()):
                    rows = vis[done:done + n]
                    k = int(rows.sum())
                    feats = (rows, [f[used:used + k] for f in deepstack])
                    used += k
                self._piece(cache, embeds[done:done + n], position_ids[:, done:done + n], feats)
                done += n
            return self.buf.logits32.clone()

    # ---------------------------------------------------------------- internals
    def _check(self, cache: FastCache) -> None:
        if not isinstance(cache, FastCache) or not cache.live:
            raise ValueError("FastBackend: not a live cache of this backend (released?)")

    def _bucket(self, n: int) -> int:
        if not self.pad_rows:
            return n
        return next(b for b in self.buckets if b >= n)

    def _piece(self, cache: FastCache, emb, pos, feats) -> None:
        b, n = self.buf, emb.shape[0]
        rows = self._bucket(n)
        b.emb[:n].copy_(emb, non_blocking=True)
        self._stage(cache, pos, n, rows)
        if feats is not None:
            mask, fs = feats
            idx = mask.nonzero().squeeze(1).to(self.device, non_blocking=True)
            b.ds[:, :rows].zero_()
            for i, f in enumerate(fs):
                b.ds[i].index_copy_(0, idx, f.to(self.dtype))
        meta = Meta(cache.slot, cache.length, n, b.stage[:3])
        if self.use_graphs:
            self._graphs[(rows, feats is not None)].replay()
        else:
            self._forward(rows, feats is not None, meta)
        cache.length += n

    def _stage(self, cache: FastCache, pos: torch.Tensor, n: int, rows: int) -> None:
        """Write [slot, start, n_new] and the (3, rows) positions into the device stage."""
        b = self.buf
        pinned = self.device.type == "cuda"
        if pos.device.type == "cpu":
            host = torch.zeros(3 + 3 * rows, dtype=torch.int64, pin_memory=pinned)
            host[:3] = torch.tensor([cache.slot, cache.length, n])
            host[3:].view(3, rows)[:, :n] = pos
            b.stage[:3 + 3 * rows].copy_(host, non_blocking=pinned)
        else:
            host = torch.tensor([cache.slot, cache.length, n], dtype=torch.int64).pin_memory() \
                if pinned else torch.tensor([cache.slot, cache.length, n])
            b.stage[:3].copy_(host, non_blocking=pinned)
            b.stage[3:3 + 3 * rows].view(3, rows)[:, :n].copy_(pos)
