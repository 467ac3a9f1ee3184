"""Pixel rows on the model's device (model/pixels.py) against the checkpoint's HF video
processor, which the engine no longer calls per chunk (CPU here; the GPU twin is in
tests/model/fast/test_gpu.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.pixels import ChunkPixels, check_frames
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
    session's layout expects (640x480 -> 300 merged tokens)."""
    frames = random_frames(np.random.default_rng(3), size=(480, 640))
    pix, grid = tiny_model.vision.pixels(frames)
    ref, _ = _processor_pixels(tiny_model.vision.proc, tiny_model.vision.prep.fitted(frames))
    assert grid.tolist() == [[1, 30, 40]] and torch.equal(pix, ref)
    assert tiny_model.vision.prep.grid_for(480, 640) == (1, 30, 40)      # what the loader warms up


def test_bad_frames_are_refused_before_any_work():
    """Guards the boundary check: 0 or 3 frames, a grey frame, float frames: one clear line."""
    ok = np.zeros((32, 32, 3), dtype=np.uint8)
    for bad, msg in (((), "1 or 2 frames"), ((ok, ok, ok), "1 or 2 frames"),
                     ((np.zeros((32, 32), dtype=np.uint8),), "RGB uint8"),
                     ((ok.astype(np.float32),), "RGB uint8")):
        with pytest.raises(ValueError, match=msg):
            check_frames(bad)
