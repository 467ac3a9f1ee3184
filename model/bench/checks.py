"""Correctness checks of the fast path, shared by the tests (CPU) and the benchmark (GPU).

Contract:
* ``op_checks(ops, device, dims)`` runs every fused op of ``ops`` (``TritonOps``) and of
  ``TorchOps`` on the same fresh random inputs (float32 and bfloat16; decode and prefill
  row counts; cache offsets; two slots) and returns ``{check: (error, tolerance)}``;
  ``failed(result)`` lists the checks over tolerance.
* ``agreement(hf_model, backend, encode, ...)`` compares the fast backend with the
  transformers text stack on one model: the decision logits after each prefilled chunk
  (visual deepstack included), then ``steps`` greedy decode steps from the SAME cache
  (the reference's keys/values loaded into a fast cache), teacher-forced with the
  reference's tokens so every step is compared, plus a free-running greedy run of each.
  The same steps also run through transformers' eager attention on a copy of the cache:
  how often two correct references agree is the noise floor of this measurement (random
  weights give flat logits whose top two are often within one bf16 step).
"""
from __future__ import annotations

import math

import torch

from model.fast.reference import HFTextCache
from model.bench.stream import SILENT_TURN, SYSTEM, V_PAD, relative_positions, user_chunk
from model.fast.torch_ops import Meta, TorchOps

TINY_DIMS = dict(hq=4, hkv=2, d=16, hidden=48, inter=40, slots=2, tmax=96,
                 cases=((1, 0, 1), (1, 57, 1), (12, 0, 12), (16, 30, 11)))


class Partials:
    def __init__(self, parts: int, d: int, device):
        nan = float("nan")
        self.op = torch.full((parts * d,), nan, device=device)
        self.mp = torch.full((parts,), nan, device=device)
        self.lp = torch.full((parts,), nan, device=device)

    def attention_partials(self, nsplit, nrows, d):
        n = nsplit * nrows
        return (self.op[:n * d].view(nsplit, nrows, d), self.mp[:n].view(nsplit, nrows),
                self.lp[:n].view(nsplit, nrows))


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs error over max(1, max |b|): a relative error that tolerates tiny values."""
    return (a.float() - b.float()).abs().max().item() / max(1.0, b.float().abs().max().item())


def _bf16_step(x: float) -> float:
    """Spacing of bfloat16 numbers around ``x`` (8 significant bits)."""
    return 2.0 ** (math.floor(math.log2(max(abs(x), 1e-30))) - 7)


def failed(result: dict) -> list[str]:
    return [k for k, (e, tol) in result.items() if not e <= tol]


def op_checks(ops, device="cpu", dims: dict = TINY_DIMS, seed: int = 0, bf16_tol: float = 2e-2) -> dict:
    ref, res = TorchOps(), {}
    g = torch.Generator(device="cpu").manual_seed(seed)
    hq, hkv, d, hidden, inter = dims["hq"], dims["hkv"], dims["d"], dims["hidden"], dims["inter"]
    slots, tmax = dims["slots"], dims["tmax"]
    for dtype in (torch.float32, torch.bfloat16):
        tol = 1e-5 if dtype == torch.float32 else bf16_tol

        def r(*shape):
            return torch.randn(*shape, generator=g).to(device, dtype)

        def both(fn):
            return fn(ref), fn(ops)

        for rows, start, n in dims["cases"]:
            tag = f"{str(dtype)[6:]} rows={rows} start={start} n={n}"
            meta = Meta(1, start, n, torch.tensor([1, start, n], dtype=torch.int64, device=device))
            h0, dl, ds, w = r(rows, hidden), r(rows, hidden), r(rows, hidden), r(hidden)
            for name, delta, extra in (("norm", None, None), ("add_norm", dl, None), ("add_ds_norm", dl, ds)):
                def run(o, delta=delta, extra=extra):
                    h, xn = h0.clone(), torch.empty(rows, hidden, dtype=dtype, device=device)
                    o.add_rmsnorm(h, delta, extra, w, 1e-6, h, xn, meta)
                    return h, xn
                (ha, xa), (hb, xb) = both(run)
                res[f"{name} h {tag}"] = (_err(hb, ha), tol)
                res[f"{name} xn {tag}"] = (_err(xb, xa), tol)

            def last(o):
                xl = torch.empty(1, hidden, dtype=dtype, device=device)
                o.add_rmsnorm_last(h0.clone(), dl, ds, w, 1e-6, xl, meta)
                return xl
            res[f"norm_last {tag}"] = (_err(*reversed(both(last))), tol)
            ang = torch.randn(rows, d // 2, generator=g) * 100    # real tables: cos/sin of angles
            qkv, cos, sin = r(rows, (hq + 2 * hkv) * d), ang.cos().to(device, dtype), ang.sin().to(device, dtype)
            qw, kw = 1 + 0.1 * r(d), 1 + 0.1 * r(d)

            def rope(o):
                q = torch.empty(rows, hq, d, dtype=dtype, device=device)
                kc = torch.full((slots, hkv, tmax, d), 7.0, dtype=dtype, device=device)
                vc = kc.clone()
                o.qk_rope_store(qkv, cos, sin, qw, kw, 1e-6, q, kc, vc, meta)
                return q, kc, vc
            (qa, ka, va), (qb, kb, vb) = both(rope)
            res[f"rope q {tag}"] = (_err(qb[:n], qa[:n]), tol)
            res[f"rope k cache {tag}"] = (_err(kb, ka), tol)
            res[f"v cache {tag}"] = (_err(vb, va), 0.0)
            q, kc, vc = r(rows, hq, d), r(slots, hkv, tmax, d), r(slots, hkv, tmax, d)

            def attn(o):
                out = torch.full((rows, hq * d), 5.0, dtype=dtype, device=device)
                o.attention(q, kc, vc, meta, out, Partials(160 * rows * hq, d, device))
                return out
            res[f"attention {tag}"] = (_err(*reversed(both(attn))), tol)
            gu = r(rows, 2 * inter)

            def silu(o):
                out = torch.empty(rows, inter, dtype=dtype, device=device)
                o.silu_mul(gu, out)
                return out
            res[f"silu_mul {tag}"] = (_err(*reversed(both(silu))), tol)
            if rows <= 4:
                _gemv_checks(both, r, res, tag, tol, meta, rows, hidden, inter, hq * d, dtype, device)
        res.update(_table_checks(ops, r, device, dtype, d, hidden, tol))
        if hasattr(ops, "vision_rope"):
            res[f"vision_rope {str(dtype)[6:]}"] = (_vision_rope_err(ops, r, device), tol)
    return res


def _table_checks(ops, r, device, dtype, d, hidden, tol) -> dict:
    """The M-RoPE tables from staged positions and a device greedy step's start."""
    ref, res = TorchOps(), {}
    half, tag = d // 2, str(dtype)[6:]
    sel = torch.tensor([(0, 1, 2)[j % 3] if j < 3 * (half // 3) else 0 for j in range(half)], device=device)
    inv = (1.0 / 5e6 ** (torch.arange(half) * 2.0 / d)).float().to(device)
    for rows in (1, 5):
        pos = torch.randint(0, 20_000, (3, rows), generator=torch.Generator().manual_seed(rows)).to(device)
        for scale in (1.0, 0.5):
            out = []
            for o in (ref, ops):
                cos, sin = (torch.full((rows, half), 3.0, dtype=dtype, device=device) for _ in range(2))
                o.rope_tables(pos, sel, inv, scale, cos, sin)
                out.append((cos, sin))
            res[f"rope_tables {tag} rows={rows} scale={scale}"] = (
                max(_err(out[1][0], out[0][0]), _err(out[1][1], out[0][1])), tol)
    w = r(50, hidden)
    got = []
    for o in (ref, ops):
        tok = torch.tensor([37], device=device)
        state = torch.tensor([1234, 99], device=device)
        stage, emb = torch.full((9,), -1, device=device), torch.zeros(4, hidden, dtype=dtype, device=device)
        o.greedy_pre(w, tok, state, stage, emb)
        got.append((emb, stage, state))
    (ea, sa, ta), (eb, sb, tb) = got
    same = torch.equal(ea, eb) and torch.equal(sa, sb) and torch.equal(ta, tb) and torch.equal(ea[0], w[37])
    res[f"greedy_pre {tag}"] = (0.0 if same and sa[1] == 99 and sa[3:6].tolist() == [1234] * 3 else 1.0, 0.0)
    return res


def _vision_rope_err(ops, r, device, n=7, heads=3, hd=12) -> float:
    qkv = r(n, 3 * heads * hd)
    cos, sin = r(n, hd).float(), r(n, hd).float()
    q, k = ops.vision_rope(qkv, cos, sin, heads)
    half = hd // 2
    err = 0.0
    for part, got in ((0, q), (1, k)):
        x = qkv.view(n, 3, heads, hd)[:, part].float()
        rot = torch.cat((-x[..., half:], x[..., :half]), -1)
        want = (x * cos[:, None] + rot * sin[:, None]).to(qkv.dtype)
        err = max(err, _err(got, want))
    return err


def _gemv_checks(both, r, res, tag, tol, meta, rows, hidden, inter, width, dtype, device):
    """The fused GEMV steps of the small-row path (weights (out, in) like nn.Linear)."""
    h0, nw, ds = r(rows, hidden), r(hidden), r(rows, hidden)
    w_up, w_o, w_down = r(2 * inter, hidden) * 0.2, r(hidden, width) * 0.2, r(hidden, inter) * 0.2
    x_o, gu = r(rows, width), r(rows, 2 * inter)

    def norm_linear(o):
        out = torch.empty(rows, 2 * inter, dtype=dtype, device=device)
        o.norm_linear(h0, nw, w_up, 1e-6, out, meta)
        return out
    res[f"norm_linear {tag}"] = (_err(*reversed(both(norm_linear))), tol)

    def linear(o):
        out = torch.empty(rows, 2 * inter, dtype=dtype, device=device)
        o.linear(h0, w_up, out, meta)
        return out
    res[f"linear {tag}"] = (_err(*reversed(both(linear))), tol)

    def linear_silu(o):
        scratch = torch.empty(rows, 2 * inter, dtype=dtype, device=device)
        act = torch.empty(rows, inter, dtype=dtype, device=device)
        o.linear_silu(h0, w_up, scratch, act, meta)
        return act
    res[f"linear_silu {tag}"] = (_err(*reversed(both(linear_silu))), tol)
    for extra in (None, ds):
        def lin_res(o, extra=extra):
            h = h0.clone()
            o.linear_residual(x_o, w_o, h, extra, meta)
            return h

        def silu_res(o, extra=extra):
            h = h0.clone()
            o.silu_linear_residual(gu, w_down, h, extra, meta)
            return h
        kind = "ds" if extra is not None else "plain"
        res[f"linear_residual {kind} {tag}"] = (_err(*reversed(both(lin_res))), tol)
        res[f"silu_linear_residual {kind} {tag}"] = (_err(*reversed(both(silu_res))), tol)

    def last(o):
        out = torch.full((2 * inter,), 9.0, dtype=torch.float32, device=device)
        o.norm_linear_last(h0, nw, w_up, 1e-6, out, meta)
        return out
    res[f"norm_linear_last {tag}"] = (_err(*reversed(both(last))), tol)

    def lm_head(o):
        out16 = torch.empty(1, 2 * inter, dtype=dtype, device=device)
        out = torch.full((2 * inter,), 9.0, dtype=torch.float32, device=device)
        o.lm_head(h0[:1], w_up, out16, out, meta)
        return out
    res[f"lm_head {tag}"] = (_err(*reversed(both(lm_head))), tol)


# ------------------------------------------------------------------------ model agreement
def _segments(embed_w, encode, pixels, grid, merge, chunks):
    gh, gw = grid[1] // merge, grid[2] // merge
    out, pos = [], 0

    def seg(ids, vision=None):
        nonlocal pos
        rel, adv = relative_positions(ids, gh, gw)
        e = embed_w[torch.tensor(ids, device=embed_w.device)].clone()
        mask = ds = None
        if vision is not None:
            mask = torch.tensor([i == V_PAD for i in ids])
            e[mask.to(e.device)] = vision[0].to(e.dtype)
            ds = vision[1]
        out.append((e, rel + pos, mask, ds))
        pos += adv

    seg(SYSTEM)
    for i in range(chunks):
        seg(user_chunk(grid[0] * gh * gw), encode(pixels(i), grid))
        seg(SILENT_TURN)
    return out, pos


def agreement(hf_model, backend, encode, pixels, *, grid=(1, 30, 40), merge=2, chunks=6,
              steps=200) -> dict:
    """See the module docstring. ``pixels(i)`` gives chunk i's pixel rows."""
    embed_w = hf_model.model.language_model.embed_tokens.weight.detach()
    segs, pos = _segments(embed_w, encode, pixels, grid, merge, chunks)
    ref = HFTextCache(hf_model)
    own = backend.new_cache()
    prefill_diff, prefill_agree, n_dec = 0.0, 0, 0
    for e, p, m, d in segs:
        lr, lf = ref.append(e, p, m, d), backend.append(own, e, p, m, d)
        if m is not None:
            prefill_diff = max(prefill_diff, (lr - lf).abs().max().item())
            prefill_agree += int(lr.argmax() == lf.argmax())
            n_dec += 1
    same = backend.new_cache()
    backend.load_kv(same, *ref.kv())
    eager = HFTextCache(hf_model, attn="eager", copy_of=ref)   # a second correct reference

    def one(cache_append, tok, at):
        return cache_append(embed_w[tok].clone()[None], torch.full((3, 1), at))

    tok, agree, agree_eager, max_diff, margins, flips = int(lr.argmax()), 0, 0, 0.0, [], []
    ties = tie_agree = 0
    for j in range(steps):
        a = one(ref.append, tok, pos + j)
        b = one(lambda e, p: backend.append(same, e, p), tok, pos + j)
        c = one(eager.append, tok, pos + j)
        top2 = a.topk(2).values
        margin = (top2[0] - top2[1]).item()
        margins.append(margin)
        max_diff = max(max_diff, (a - b).abs().max().item())
        ok = int(a.argmax()) == int(b.argmax())
        agree += ok
        agree_eager += int(a.argmax()) == int(c.argmax())
        # a near-tie: the top two reference logits are within 2 bf16 steps of each other
        tie = margin <= 2 * _bf16_step(top2[0].item())
        ties += tie
        tie_agree += ok and not tie
        if not ok:
            flips.append(round(margin, 4))
        tok = int(a.argmax())
    # free run from each path's own prefill: tokens until the first divergence
    ta, tb = int(lr.argmax()), int(lf.argmax())
    ref2 = HFTextCache(hf_model)
    for e, p, m, d in segs:
        ref2.append(e, p, m, d)
    same_prefix = 0
    for j in range(steps if ta == tb else 0):
        ta = int(one(ref2.append, ta, pos + j).argmax())
        tb = int(one(lambda e, p: backend.append(own, e, p), tb, pos + j).argmax())
        if ta != tb:
            break
        same_prefix += 1
    backend.release(own)
    backend.release(same)
    ms = sorted(margins)
    return {"prefill_chunks": n_dec, "prefill_argmax_agree": prefill_agree,
            "prefill_max_abs_logit_diff": prefill_diff, "context_tokens": ref.length,
            "teacher_forced_steps": steps, "teacher_forced_agree": agree,
            "teacher_forced_agreement": agree / steps, "decode_max_abs_logit_diff": max_diff,
            "reference_sdpa_vs_eager_agree": agree_eager,
            "near_tie_steps": ties, "agreement_without_near_ties": tie_agree / max(1, steps - ties),
            "ref_top1_margin_p10": ms[len(ms) // 10], "ref_top1_margin_p50": ms[len(ms) // 2],
            "disagreement_margins": flips, "free_run_same_tokens": same_prefix}
