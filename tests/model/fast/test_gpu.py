"""The fast path on a real GPU (marked ``gpu``): Triton kernels, CUDA graphs, padding.

Tiny random Qwen3-VL in float32 on CUDA (float32 attention dots run in IEEE mode) against
the transformers text stack and encoder; run with ``pytest -m gpu tests/model``.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.fast.backend import FastBackend  # noqa: E402
from model.bench.checks import failed, op_checks  # noqa: E402
from model.fast.reference import HFTextCache  # noqa: E402
from model.fast.tiny import build_qwen3vl, tiny_config  # noqa: E402
from model.fast.vision import FastVision, hf_video_features  # noqa: E402
from tests.model.conftest import fp_tol  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return build_qwen3vl(tiny_config(), dtype=torch.float32, device="cuda", seed=1)


def test_triton_kernels_match_torch_ops_on_gpu():
    """Guards the compiled kernels (not the interpreter): same results as the torch ops."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from model.fast.triton_ops import TritonOps
    for ops in (TritonOps(), TritonOps(glu=True, pdl=True, gemv_lm_head=True),
                TritonOps(glu=True, pdl=True, pdl_trigger_first=True, m1_block_k=4096, gemv_max_k=12288),
                TritonOps(decode_splits=5, prefill_splits=3, decode_block_n=16,
                          prefill_block_n=16, prefill_block_m=16)):
        result = op_checks(ops, "cuda")
        assert not failed(result), {k: result[k] for k in failed(result)}


def test_graph_replay_matches_reference(model):
    """Guards graph capture (static buffers, stage copies, bucket padding, deepstack variant,
    two slots) against the eager transformers path: logits within 1e-4, same greedy tokens."""
    from tests.model.fast.test_backend import _embed, _script
    fast = FastBackend(model, max_tokens=256, pool_size=2, buckets=(1, 2, 4, 8, 16, 32))
    assert fast.use_graphs
    ref = HFTextCache(model)
    other, cache = fast.new_cache(), fast.new_cache()
    segs, pos = _script(model, seed=0)
    fast.append(other, *segs[0])
    for s in segs:
        lf, lr = fast.append(cache, *s), ref.append(*s)
        assert (lf - lr).abs().max().item() <= 1e-4
    for _ in range(16):
        tok = int(lr.argmax())
        step = (_embed(model, [tok]), torch.full((3, 1), pos), None, None)
        pos += 1
        lf, lr = fast.append(cache, *step), ref.append(*step)
        assert int(lf.argmax()) == int(lr.argmax())
        assert (lf - lr).abs().max().item() <= 1e-4


def test_vision_graph_matches_hf(model):
    """Guards the captured vision encoder: replays on fresh pixels equal the HF encoder."""
    fv = FastVision(model, [(1, 6, 8)])
    for seed in (0, 1):
        pix = torch.randn(48, 3 * 2 * 16 * 16, generator=torch.Generator().manual_seed(seed)).cuda()
        e, ds = fv.encode(pix, (1, 6, 8))
        e_ref, ds_ref = hf_video_features(model.model, pix, (1, 6, 8))
        assert (e - e_ref).abs().max().item() <= 1e-4
        assert all((a - b).abs().max().item() <= 1e-4 for a, b in zip(ds, ds_ref))


def test_device_pixels_on_gpu_match_cpu():
    """Guards the engine's CUDA pixel path (pinned async upload through a reused staging
    buffer, resize, normalise, patches): without a resize the rows equal the CPU ones; with
    one (720p) bicubic may round a few levels the other way, never by more than one level;
    reusing the staging buffer never alters an earlier chunk's rows."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    import numpy as np
    from transformers import Qwen3VLVideoProcessor

    from model.pixels import ChunkPixels
    proc = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    cpu, gpu = ChunkPixels(proc, 614_400, "cpu"), ChunkPixels(proc, 614_400, "cuda")
    rng = np.random.default_rng(0)
    for size in ((480, 640), (720, 1280)):
        frames = tuple(rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(2))
        (pc, gc), (pg, gg) = cpu.prepare(frames), gpu.prepare(frames)
        assert pg.device.type == "cuda" and torch.equal(gc, gg)
        levels = (cpu.fitted(frames) - gpu.fitted(frames).cpu()).abs()
        if size == (480, 640):
            assert (pc - pg.cpu()).abs().max().item() <= fp_tol(pc, ulps=4)
        else:
            assert levels.max().item() <= 1 and (levels > 0).float().mean().item() < 1e-3
    # the pinned staging buffer is reused: an earlier chunk's rows must not change
    a, b = (tuple(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)) for _ in range(2))
    rows_a = gpu.prepare(a)[0]
    gpu.prepare(b)
    assert (rows_a.cpu() - cpu.prepare(a)[0]).abs().max().item() <= fp_tol(rows_a, ulps=4)
