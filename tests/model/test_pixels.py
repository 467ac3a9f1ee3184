"""Pixel rows on the model's device (model/pixels.py) against the checkpoint's HF video
processor, which the engine no longer calls per chunk (CPU here; the GPU twin is in
tests/model/fast/test_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.pixels import ChunkPixels, check_frames, resize_levels, resize_levels_int
from tests.model.conftest import fp_tol, random_frames


def _processor_pixels(proc, video: torch.Tensor):
    """The HF processor's output for a fitted float video (T, 3, H, W) of whole levels."""
    frames = video.permute(0, 2, 3, 1).to(torch.uint8).numpy()
    out = proc(videos=[frames], do_resize=False, do_sample_frames=False, return_tensors="pt")
    return out["pixel_values_videos"], out["video_grid_thw"]


@pytest.mark.parametrize("sizes", [[(480, 640)] * 2, [(64, 64)], [(70, 100), (50, 50)], [(720, 1280)] * 2],
                         ids=["640x480", "partial", "mixed-resized", "720p-resized"])
def test_device_pixels_equal_the_processors(tiny_model, sizes):
    """Guards the normalisation constants (the processor's fused rescale + normalise), the
    patch order (merge windows, channel/frame/patch features), the partial-chunk frame
    repeat and the resize to the fitted size: rows and grid equal the HF processor's."""
    rng = np.random.default_rng(7)
    frames = tuple(random_frames(rng, 1, s)[0] for s in sizes)
    prep = ChunkPixels(tiny_model.vision.proc, 614_400, "cpu")
    video = prep.fitted(frames)
    assert video.shape[0] == 2 and video.shape[2] % 32 == 0 and video.shape[3] % 32 == 0
    assert torch.equal(video, video.round()) and 0 <= video.min() and video.max() <= 255
    if len(sizes) == 1:
        assert torch.equal(video[0], video[1])
    if sizes[0] == (480, 640):               # no resize: the frames themselves
        assert torch.equal(video[0].permute(1, 2, 0), torch.from_numpy(frames[0]).float())
    pix, grid = prep.prepare(frames)
    ref_pix, ref_grid = _processor_pixels(tiny_model.vision.proc, video)
    assert torch.equal(grid, ref_grid) and pix.dtype == torch.float32
    assert pix.shape == ref_pix.shape and (pix - ref_pix).abs().max() <= fp_tol(ref_pix, ulps=4)


def test_encoder_uses_device_pixels(tiny_model):
    """Guards the wiring: VisionEncoder.pixels is the device path, with the grid the
    session's layout expects (640x480 -> 448x608 = 266 merged tokens at the default,
    benchmark, budget)."""
    frames = random_frames(np.random.default_rng(3), size=(480, 640))
    pix, grid = tiny_model.vision.pixels(frames)
    ref, _ = _processor_pixels(tiny_model.vision.proc, tiny_model.vision.prep.fitted(frames))
    assert grid.tolist() == [[1, 28, 38]] and torch.equal(pix, ref)
    assert tiny_model.vision.prep.grid_for(480, 640) == (1, 28, 38)      # what the loader warms up


def test_bad_frames_are_refused_before_any_work():
    """Guards the boundary check: 0 or 3 frames, a grey frame, float frames: one clear line."""
    ok = np.zeros((32, 32, 3), dtype=np.uint8)
    for bad, msg in (((), "1 or 2 frames"), ((ok, ok, ok), "1 or 2 frames"),
                     ((np.zeros((32, 32), dtype=np.uint8),), "RGB uint8"),
                     ((ok.astype(np.float32),), "RGB uint8")):
        with pytest.raises(ValueError, match=msg):
            check_frames(bad)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 120 * np.sin(x / 17.0 + c) * np.cos(y / 23.0) for c in range(3)], -1)
    return img.clip(0, 255).astype(np.uint8)


def _processor_fitted(proc, frames, budget: int, min_pixels: int) -> tuple[torch.Tensor, list[int]]:
    """The HF video processor's own resize (do_resize on, rescale/normalise off), its rows
    put back into a (T, 3, H, W) video, and its grid."""
    out = proc(videos=[np.stack(frames)], do_resize=True, do_sample_frames=False, do_rescale=False,
               do_normalize=False, size={"shortest_edge": min_pixels, "longest_edge": budget},
               return_tensors="pt")
    gt, gh, gw = out["video_grid_thw"][0].tolist()
    p, m, tp = proc.patch_size, proc.merge_size, proc.temporal_patch_size
    rows = out["pixel_values_videos"].reshape(gt, gh // m, gw // m, m, m, 3, tp, p, p)
    video = rows.permute(0, 6, 5, 1, 3, 7, 2, 4, 8).reshape(gt * tp, 3, gh * p, gw * p)
    return video, [gt, gh, gw]


PROCESSOR_SIZES = [(660, 500), (720, 1280), (130, 100), (1080, 1920), (640, 480), (480, 640)]


@pytest.mark.parametrize("budget", [602_112, 786_432], ids=["benchmark", "demo"])
@pytest.mark.parametrize("min_pixels", [1024, 128 * 32 * 32], ids=["tiny-min", "qwen-min"])
def test_resized_frames_equal_the_processors_resize(tiny_dir, budget, min_pixels):
    """Guards issue 12 item 4: with the frame resized, the engine's pixels differed from the
    Qwen3-VL video processor's by up to 22 levels (it resizes uint8 frames on the CPU in two
    passes, each rounded and clamped to 0..255; we interpolated once in float) and the
    processor's min-pixels upscale was missing. Any camera size, smooth or noisy: the same
    grid, and every pixel within 1 level of the processor's own resize."""
    from transformers import AutoVideoProcessor
    proc = AutoVideoProcessor.from_pretrained(tiny_dir, size={"shortest_edge": min_pixels,
                                                              "longest_edge": 32 * 32 * 1024})
    prep = ChunkPixels(proc, budget, "cpu")
    rng = np.random.default_rng(3)
    for h, w in PROCESSOR_SIZES:
        for frames in ((_smooth(h, w),) * 2, tuple(random_frames(rng, 2, (h, w)))):
            ref, grid = _processor_fitted(proc, frames, budget, min_pixels)
            mine = prep.fitted(frames)
            assert list(prep.grid_for(h, w)) == grid, (h, w)
            assert mine.shape == ref.shape, (h, w)
            assert (mine - ref).abs().max() <= 1, (h, w, float((mine - ref).abs().max()))


@pytest.mark.parametrize("src,dst", [((130, 100), (128, 96)), ((130, 100), (320, 256)), ((20, 30), (32, 64)),
                                     ((66, 50), (32, 32)), ((200, 333), (96, 160)), ((64, 64), (64, 96))])
def test_integer_resize_equals_torchs_uint8_kernel(src, dst):
    """Guards the device path (CUDA has no uint8 antialiased bicubic): the int32 emulation
    gives the CPU uint8 kernel's levels exactly, downscaling and upscaling, on noise."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, *src), dtype=np.uint8))
    native = resize_levels(x, *dst)
    assert native.dtype == torch.uint8 and tuple(native.shape[-2:]) == dst
    assert torch.equal(resize_levels_int(x, *dst), native.int())
