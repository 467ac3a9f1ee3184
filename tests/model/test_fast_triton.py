"""The Triton kernels against their plain-torch twins, on the CPU via the Triton interpreter.

The checks run in a child process started with ``TRITON_INTERPRET=1`` (the variable must be
set before Triton compiles anything). They cover each fused op in float32 and bfloat16
(padding rows, cache offsets, several key splits, untouched cache cells) and the whole
FastBackend with Triton ops on the tiny model against the transformers text stack.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


def _run_child(check: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = f"import tests.model.test_fast_triton as t; t.{check}()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CHECKS OK" in proc.stdout


class _Work:
    def __init__(self, parts, d):
        self.op = torch.full((parts * d,), float("nan"))
        self.mp = torch.full((parts,), float("nan"))
        self.lp = torch.full((parts,), float("nan"))

    def attention_partials(self, nsplit, nrows, d):
        n = nsplit * nrows
        return (self.op[:n * d].view(nsplit, nrows, d), self.mp[:n].view(nsplit, nrows),
                self.lp[:n].view(nsplit, nrows))


def _close(a, b, dtype, what):
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    err = (a.float() - b.float()).abs().max().item()
    scale = max(1.0, b.float().abs().max().item())
    assert err <= tol * scale, f"{what} {dtype}: max abs error {err}"


def _op_checks():
    from model.fast_torch import Meta, TorchOps
    from model.fast_triton import TritonOps
    ref = TorchOps()
    tri = TritonOps(decode_splits=5, prefill_splits=3, prefill_block_m=16, block_n=16)
    g = torch.Generator().manual_seed(0)
    hq, hkv, d, hidden, inter, slots, tmax = 4, 2, 16, 48, 40, 2, 96
    for dtype in (torch.float32, torch.bfloat16):
        def r(*shape):
            return torch.randn(*shape, generator=g).to(dtype)
        for rows, start, n in ((1, 0, 1), (1, 57, 1), (12, 0, 12), (16, 30, 11)):
            meta = Meta(1, start, n, torch.tensor([1, start, n], dtype=torch.int64))
            # add + RMSNorm (with and without deepstack), and the last-row variant
            h0, dl, ds, w = r(rows, hidden), r(rows, hidden), r(rows, hidden), r(hidden)
            for delta, extra in ((None, None), (dl, None), (dl, ds)):
                outs = []
                for ops in (ref, tri):
                    h, xn = h0.clone(), torch.empty(rows, hidden, dtype=dtype)
                    ops.add_rmsnorm(h, delta, extra, w, 1e-6, h, xn, meta)
                    outs.append((h, xn))
                _close(outs[1][0], outs[0][0], dtype, "add_rmsnorm h")
                _close(outs[1][1], outs[0][1], dtype, "add_rmsnorm xn")
            lasts = []
            for ops in (ref, tri):
                xl = torch.empty(1, hidden, dtype=dtype)
                ops.add_rmsnorm_last(h0.clone(), dl, ds, w, 1e-6, xl, meta)
                lasts.append(xl)
            _close(lasts[1], lasts[0], dtype, "add_rmsnorm_last")
            # q/k norm + RoPE + cache store
            qkv, cos, sin = r(rows, (hq + 2 * hkv) * d), r(rows, d // 2), r(rows, d // 2)
            qw, kw = r(d), r(d)
            res = []
            for ops in (ref, tri):
                q = torch.empty(rows, hq, d, dtype=dtype)
                kc = torch.full((slots, hkv, tmax, d), 7.0, dtype=dtype)
                vc = torch.full((slots, hkv, tmax, d), 7.0, dtype=dtype)
                ops.qk_rope_store(qkv, cos, sin, qw, kw, 1e-6, q, kc, vc, meta)
                res.append((q, kc, vc))
            _close(res[1][0][:n], res[0][0][:n], dtype, "rope q")
            _close(res[1][1], res[0][1], dtype, "rope k cache")
            assert torch.equal(res[1][2], res[0][2]), "v cache"
            assert (res[1][1][0] == 7).all() and (res[1][1][1, :, start + n:] == 7).all()
            # attention over the live keys, padding rows zero
            q = r(rows, hq, d)
            kc, vc = r(slots, hkv, tmax, d), r(slots, hkv, tmax, d)
            outs = []
            for ops in (ref, tri):
                out = torch.full((rows, hq * d), 5.0, dtype=dtype)
                ops.attention(q, kc, vc, meta, out, _Work(8 * rows * hq, d))
                outs.append(out)
            _close(outs[1], outs[0], dtype, f"attention rows={rows} start={start}")
            # SiLU * up
            gu = r(rows, 2 * inter)
            outs = []
            for ops in (ref, tri):
                out = torch.empty(rows, inter, dtype=dtype)
                ops.silu_mul(gu, out)
                outs.append(out)
            _close(outs[1], outs[0], dtype, "silu_mul")
    print("CHECKS OK")


def _model_check():
    from model.fast import FastBackend
    from model.fast_ref import HFTextCache
    from model.fast_tiny import build_qwen3vl, tiny_config
    from model.fast_triton import TritonOps
    from tests.model.test_fast_backend import _embed, _script
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=2)
    ops = TritonOps(decode_splits=4, prefill_splits=3, prefill_block_m=16, block_n=16)
    fast = FastBackend(model, max_tokens=160, pool_size=2, ops=ops, use_graphs=False,
                       pad_rows=True, buckets=(1, 2, 4, 8, 16, 32))
    ref = HFTextCache(model)
    other = fast.new_cache()
    cache = fast.new_cache()          # slot 1: exercises slot addressing
    segs, pos = _script(model, seed=4, chunks=2)
    fast.append(other, *segs[0])
    for s in segs:
        lf, lr = fast.append(cache, *s), ref.append(*s)
        assert (lf - lr).abs().max().item() <= 1e-4, (lf - lr).abs().max().item()
    for _ in range(6):
        step = (_embed(model, [int(lr.argmax())]), torch.full((3, 1), pos), None, None)
        pos += 1
        lf, lr = fast.append(cache, *step), ref.append(*step)
        assert int(lf.argmax()) == int(lr.argmax())
        assert (lf - lr).abs().max().item() <= 1e-4
    print("CHECKS OK")


def test_triton_ops_match_torch_ops_under_interpreter():
    """Guards every Triton kernel's math (masking, split-K merge, cache offsets and slots,
    rounding in bf16) against the plain-torch definition, without a GPU."""
    _run_child("_op_checks")


@pytest.mark.slow
def test_fast_backend_with_triton_ops_matches_reference_under_interpreter():
    """Guards the kernels wired into the full backend (padded rows, two cache slots, prefill
    with deepstack, decode) against the transformers text stack, without a GPU."""
    _run_child("_model_check")
