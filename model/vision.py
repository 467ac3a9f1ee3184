"""Frames -> vision features for one chunk (resize, pixel patches, ViT + deepstack).

Contract: ``fit_size(h, w, max_pixels)`` is the chunk's frame size: both sides multiples
of 32 (one LLM token per 32x32 pixels per 2 frames), aspect kept, and 2 x H x W within
``max_pixels`` (640x480 stays 640x480 = 300 tokens at the default budget; 1280x720 under
602,112 becomes 704x384 = 264 tokens). ``VisionEncoder.encode(frames)`` takes 1 or 2 RGB
uint8 frames (one is repeated: a partial chunk), resizes both to the first frame's fitted
size (bicubic, antialiased), lets the checkpoint's HF video processor turn them into
normalized pixel patches (``do_resize=False``: the size is ours) and runs the model's
vision tower once, returning ``VisionFeatures``: merged embeddings ``(n, hidden)``, the
deepstack list (one ``(n, hidden)`` per deepstack layer) and the merged grid ``(h, w)``.
The session keeps these per chunk so a window rebuild never re-runs the ViT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FACTOR = 32
FRAMES = 2


@dataclass(frozen=True, eq=False)
class VisionFeatures:
    embeds: torch.Tensor              # (n, hidden)
    deepstack: tuple[torch.Tensor, ...]
    grid_hw: tuple[int, int]          # merged grid: n = h * w


def fit_size(h: int, w: int, max_pixels: int, frames: int = FRAMES, factor: int = FACTOR) -> tuple[int, int]:
    """Target (height, width) for ``frames`` frames of ``h x w`` under ``max_pixels`` total."""
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {w}x{h}")
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if frames * hb * wb > max_pixels:
        beta = math.sqrt(frames * h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    return hb, wb


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"a chunk frame must be an RGB uint8 array (H, W, 3), got {shape}")


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
        self.fast = None     # model.fast_vision.FastVision (set by the loader with the fast backend)

    def pixels(self, frames: tuple[np.ndarray, ...] | list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values_videos, video_grid_thw)`` for one chunk, on the CPU."""
        if not 1 <= len(frames) <= FRAMES:
            raise ValueError(f"a chunk holds 1 or 2 frames, got {len(frames)}")
        for f in frames:
            _check_frame(f)
        frames = list(frames) + [frames[-1]] * (FRAMES - len(frames))
        th, tw = fit_size(frames[0].shape[0], frames[0].shape[1], self.max_pixels)
        video = torch.from_numpy(np.stack([np.ascontiguousarray(f) for f in frames])) \
            if all(f.shape == frames[0].shape for f in frames) else None
        if video is None or video.shape[1:3] != (th, tw):
            resized = []
            for f in frames:
                t = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)[None].float()
                t = F.interpolate(t, size=(th, tw), mode="bicubic", antialias=True, align_corners=False)
                resized.append(t[0].clamp_(0, 255).round_().to(torch.uint8).permute(1, 2, 0))
            video = torch.stack(resized)
        out = self.proc(videos=[video.numpy()], do_resize=False, do_sample_frames=False,
                        return_tensors="pt")
        return out["pixel_values_videos"], out["video_grid_thw"]

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
