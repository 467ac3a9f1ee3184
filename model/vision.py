"""Frames -> vision features for one chunk (pixel rows on the device, ViT + deepstack).

Contract: ``VisionEncoder.encode(frames)`` takes 1 or 2 RGB uint8 frames (one is
repeated: a partial chunk) and returns ``VisionFeatures``: merged embeddings
``(n, hidden)``, the deepstack list (one ``(n, hidden)`` per deepstack layer) and the
merged grid ``(h, w)``. ``pixels(frames)`` gives the vision tower's input
``(pixel_values_videos, video_grid_thw)``: sizing (``fit_size``: multiples of 32, within
``max_pixels`` for both frames), resize, normalisation and patches are done by
``model.pixels.ChunkPixels`` with torch ops on the model's device, numerically the
checkpoint's HF video processor (``do_resize=False``: the size is ours), which is only
read for its settings. The vision tower then runs once (as one CUDA graph with the fast
backend: ``model.fast.vision``). The session keeps the features per chunk so a window
rebuild never re-runs the ViT.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from model.pixels import ChunkPixels, fit_size  # noqa: F401  (fit_size re-exported)


@dataclass(frozen=True, eq=False)
class VisionFeatures:
    embeds: torch.Tensor              # (n, hidden)
    deepstack: tuple[torch.Tensor, ...]
    grid_hw: tuple[int, int]          # merged grid: n = h * w


def _first_tensor(x) -> torch.Tensor:
    """One video's tensor from a per-video tuple/list or a plain tensor."""
    return torch.cat(list(x), dim=0) if isinstance(x, (tuple, list)) else x


class VisionEncoder:
    def __init__(self, hf_model, video_processor, max_pixels: int):
        self.hf = hf_model
        self.proc = video_processor
        self.max_pixels = int(max_pixels)
        self.merge = int(hf_model.config.vision_config.spatial_merge_size)
        self.device = hf_model.device
        self.dtype = hf_model.model.visual.dtype
        self.prep = ChunkPixels(video_processor, self.max_pixels, self.device)
        self.fast = None     # model.fast.vision.FastVision (set by the loader with the fast backend)

    def pixels(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values_videos, video_grid_thw)`` for one chunk: float32 rows on the
        model's device, the grid on the CPU."""
        return self.prep.prepare(frames)

    @torch.inference_mode()
    def encode(self, frames) -> VisionFeatures:
        pix, grid = self.pixels(frames)
        g = grid[0].tolist()
        if self.fast is not None:          # same features, one CUDA graph replay
            embeds, deep = self.fast.encode(pix, g)
            return VisionFeatures(embeds, tuple(deep), (g[1] // self.merge, g[2] // self.merge))
        out = self.hf.model.get_video_features(pix.to(self.device, self.dtype), grid.to(self.device))
        if hasattr(out, "pooler_output"):
            embeds, deep = out.pooler_output, out.deepstack_features
        else:  # older transformers return (embeds, deepstack)
            embeds, deep = out
        return VisionFeatures(_first_tensor(embeds), tuple(_first_tensor(d) for d in deep),
                              (g[1] // self.merge, g[2] // self.merge))
