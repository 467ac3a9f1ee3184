"""Chunk frames -> the vision tower's pixel rows, with torch ops on the model's device.

Contract: ``fit_size(h, w, max_pixels)`` is the chunk's frame size: both sides multiples
of 32 (one LLM token per 32x32 pixels per 2 frames), aspect kept, and 2 x H x W within
``max_pixels`` (640x480 stays 640x480 = 300 tokens at the default budget; 1280x720 under
602,112 becomes 704x384 = 264 tokens).

``ChunkPixels(video_processor, max_pixels, device)`` reads the normalisation and patch
geometry off the checkpoint's HF video processor once (mean, std, rescale factor, patch,
temporal patch and merge sizes) and then never calls it: ``prepare(frames) ->
(pixel_values, grid_thw)`` takes 1 or 2 RGB uint8 frames ``(H, W, 3)`` (one is repeated: a
partial chunk), uploads them as uint8 (through a reused pinned buffer, asynchronously on
CUDA), resizes them to the first frame's fitted size (bicubic, antialiased, rounded to
whole 0..255 levels, as a uint8 image would hold), normalises and cuts them into patches
on ``device``.
``pixel_values`` is float32 ``(t*h*w, C*T*P*P)`` on ``device``, row and column order exactly
the processor's (patches in merge-window order: frame group, merged row, merged column,
row in window, column in window; features channel, frame, patch row, patch column);
``grid_thw`` is a ``(1, 3)`` int64 CPU tensor. ``fitted(frames)`` is the resized float
video ``(T, 3, H, W)`` alone (whole levels), for tests against the processor;
``grid_for(h, w)`` the patch grid ``(t, h, w)`` a chunk of ``h x w`` frames gets.

Why: the HF processor on the CPU costs ~2 ms at p50 but tens of ms at p99 (run 4 on the
H100 host); on the device the same arithmetic is a few small kernels off the host's
critical path. Tested on the CPU against the processor's own output
(tests/model/test_pixels.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FACTOR = 32
FRAMES = 2
MAX_STAGING = 4          # pinned staging buffers kept (one per frame shape)


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


def check_frames(frames) -> list[np.ndarray]:
    """The chunk's frames, padded to ``FRAMES`` by repeating the last; ValueError if bad."""
    if not 1 <= len(frames) <= FRAMES:
        raise ValueError(f"a chunk holds 1 or 2 frames, got {len(frames)}")
    for f in frames:
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            shape = getattr(f, "shape", None)
            raise ValueError(f"a chunk frame must be an RGB uint8 array (H, W, 3), got {shape}")
    return list(frames) + [frames[-1]] * (FRAMES - len(frames))


def _processor_value(proc, name: str):
    value = getattr(proc, name, None)
    if value is None:
        raise ValueError(f"the video processor has no {name!r}: not a Qwen-VL video processor?")
    return value


class ChunkPixels:
    def __init__(self, video_processor, max_pixels: int, device):
        self.max_pixels = int(max_pixels)
        self.device = torch.device(device)
        self.patch = int(_processor_value(video_processor, "patch_size"))
        self.tpatch = int(_processor_value(video_processor, "temporal_patch_size"))
        self.merge = int(_processor_value(video_processor, "merge_size"))
        if FRAMES % self.tpatch:
            raise ValueError(f"temporal_patch_size {self.tpatch} does not divide {FRAMES} frames")
        if FACTOR % (self.patch * self.merge):
            raise ValueError(f"patch {self.patch} x merge {self.merge} does not divide {FACTOR}")
        # the processor's fused rescale + normalise: (x - mean / r) / (std / r), in float32
        scale = float(video_processor.rescale_factor) if video_processor.do_rescale else 1.0
        mean = torch.tensor(_processor_value(video_processor, "image_mean"), dtype=torch.float32)
        std = torch.tensor(_processor_value(video_processor, "image_std"), dtype=torch.float32)
        if not video_processor.do_normalize:
            mean, std = torch.zeros(3), torch.ones(3)
        self._staging: dict[tuple[int, ...], tuple[torch.Tensor, object]] = {}
        self.mean = (mean * (1.0 / scale)).view(1, 3, 1, 1).to(self.device)
        self.std = (std * (1.0 / scale)).view(1, 3, 1, 1).to(self.device)

    def _upload(self, frames: list[np.ndarray]) -> torch.Tensor:
        """``frames`` (same shape) as one uint8 ``(N, H, W, 3)`` tensor on the device. On CUDA
        they are stacked straight into a pinned staging buffer kept per shape (no allocation,
        no second host copy) and copied asynchronously; the buffer is reused once the copy
        recorded on its event is done (a step earlier, so the wait is nil)."""
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames)).to(self.device)
        shape = (len(frames), *frames[0].shape)
        if shape not in self._staging:
            if len(self._staging) >= MAX_STAGING:
                self._staging.clear()
            self._staging[shape] = (torch.empty(shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event())
        host, copied = self._staging[shape]
        copied.synchronize()
        np.stack(frames, out=host.numpy())
        out = host.to(self.device, non_blocking=True)
        copied.record()
        return out

    def fitted(self, frames) -> torch.Tensor:
        """The chunk's frames at the fitted size: float32 ``(T, 3, H, W)``, whole levels."""
        frames = check_frames(frames)
        th, tw = fit_size(frames[0].shape[0], frames[0].shape[1], self.max_pixels)
        if all(f.shape == frames[0].shape for f in frames):
            groups = [self._upload(frames)]
        else:
            groups = [self._upload([f]) for f in frames]
        out = []
        for g in groups:
            x = g.permute(0, 3, 1, 2).float()
            if tuple(x.shape[-2:]) != (th, tw):
                x = F.interpolate(x, size=(th, tw), mode="bicubic", antialias=True, align_corners=False)
                x = x.clamp_(0, 255).round_()
            out.append(x)
        return torch.cat(out) if len(out) > 1 else out[0]

    def grid_for(self, h: int, w: int) -> tuple[int, int, int]:
        th, tw = fit_size(h, w, self.max_pixels)
        return FRAMES // self.tpatch, th // self.patch, tw // self.patch

    def prepare(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        x = (self.fitted(frames) - self.mean) / self.std
        t, c, h, w = x.shape
        p, m, tp = self.patch, self.merge, self.tpatch
        gt, gh, gw = t // tp, h // p, w // p
        x = x.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
        # -> (group, merged row, merged col, row in window, col in window, channel, frame, py, px)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(gt * gh * gw, c * tp * p * p), torch.tensor([[gt, gh, gw]], dtype=torch.long)
