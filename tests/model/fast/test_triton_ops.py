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

ROOT = Path(__file__).resolve().parents[3]


def _run_child(check: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = f"import tests.model.fast.test_triton_ops as t; t.{check}()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CHECKS OK" in proc.stdout


def _op_checks():
    from model.bench.checks import failed, op_checks
    from model.fast.triton_ops import TritonOps
    ops = TritonOps(decode_splits=5, prefill_splits=3, prefill_block_m=16, prefill_block_n=16,
                    decode_block_n=16, glu=True, gemv_lm_head=True)
    assert not ops.pdl          # never under the interpreter
    # the interpreter rounds float32 -> bf16 by truncation (the GPU rounds to nearest), so
    # chained bf16 roundings drift by a few ulps more here: a looser bf16 bound than on CUDA
    result = op_checks(ops, "cpu", bf16_tol=5e-2)
    bad = failed(result)
    assert not bad, {k: result[k] for k in bad}
    print("CHECKS OK")


def _model_check():
    from model.fast.backend import FastBackend
    from model.fast.reference import HFTextCache
    from model.fast.tiny import build_qwen3vl, tiny_config
    from model.fast.triton_ops import TritonOps
    from tests.model.fast.test_backend import _embed, _script
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=2)
    # wide GEMV tiles: the interpreter runs programs one by one (lm_head has 152k rows)
    ops = TritonOps(decode_splits=4, prefill_splits=3, prefill_block_m=16, prefill_block_n=16,
                    decode_block_n=16, gemv_block_n=8192, gemv_block_k=64, lm_head_block_n=8192)
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
