"""FastVision (fixed-grid vision encoder) against the transformers encoder, on the CPU."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.fast.tiny import build_qwen3vl, tiny_config  # noqa: E402
from model.fast.vision import FastVision, hf_video_features  # noqa: E402
from tests.model.conftest import fp_tol  # noqa: E402


@pytest.mark.parametrize("grid", [(1, 6, 8), (2, 4, 6)])
def test_fixed_grid_encoder_matches_hf(grid):
    """Guards the grid constants read off the HF encoder (position embeddings, rotary
    tables), the per-frame attention batching (t > 1) and the deepstack taps: embeds and
    every deepstack tensor equal the HF ones within fp32 rounding at their magnitude."""
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=3)
    fv = FastVision(model, [grid])
    n = grid[0] * grid[1] * grid[2]
    for seed in (0, 1):
        pix = torch.randn(n, 3 * 2 * 16 * 16, generator=torch.Generator().manual_seed(seed))
        e, ds = fv.encode(pix, grid)
        e_ref, ds_ref = hf_video_features(model.model, pix, grid)
        assert e.shape == e_ref.shape == (n // 4, 64)
        assert len(ds) == len(ds_ref) == 2
        assert (e - e_ref).abs().max().item() <= fp_tol(e_ref)
        for a, b in zip(ds, ds_ref):
            assert (a - b).abs().max().item() <= fp_tol(b)


def test_unprepared_grid_goes_through_hf():
    """Guards the fallback: a grid that was not prepared still encodes (via the HF model)."""
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=3)
    fv = FastVision(model, [(1, 6, 8)])
    pix = torch.randn(4 * 4, 3 * 2 * 16 * 16)
    e, ds = fv.encode(pix, (1, 4, 4))
    e_ref, _ = hf_video_features(model.model, pix, (1, 4, 4))
    assert torch.equal(e, e_ref) and len(ds) == 2


def test_auto_prepare_builds_a_plan_on_first_use():
    """Guards the engine's setting: a new frame size gets its own fixed-grid plan once."""
    model = build_qwen3vl(tiny_config(), dtype=torch.float32, device="cpu", seed=3)
    fv = FastVision(model, [], auto_prepare=True)
    pix = torch.randn(4 * 6, 3 * 2 * 16 * 16)
    e, _ = fv.encode(pix, (1, 4, 6))
    assert (1, 4, 6) in fv.plans
    e_ref, _ = hf_video_features(model.model, pix, (1, 4, 6))
    assert (e - e_ref).abs().max().item() <= fp_tol(e_ref)
