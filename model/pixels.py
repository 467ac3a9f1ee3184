"""Chunk frames -> the vision tower's pixel rows, with torch ops on the model's device.

Contract: ``fit_size(h, w, max_pixels, min_pixels=0)`` is the chunk's frame size: both
sides multiples of 32 (one LLM token per 32x32 pixels per 2 frames), aspect kept, and
2 x H x W within ``max_pixels`` (and at least ``min_pixels``): the processor's
``smart_resize``. Under the benchmark budget 602,112, 640x480 becomes 608x448 = 266
tokens and 1280x720 704x384 = 264; under the demo's 786,432, 300 and 364 tokens.

``ChunkPixels(video_processor, max_pixels, device)`` reads the normalisation and patch
geometry off the checkpoint's HF video processor once (mean, std, rescale factor, patch,
temporal patch and merge sizes) and then never calls it: ``prepare(frames) ->
(pixel_values, grid_thw)`` takes 1 or 2 RGB uint8 frames ``(H, W, 3)`` (one is repeated: a
partial chunk), uploads them as uint8 (through a reused pinned buffer, asynchronously on
CUDA), resizes them to the first frame's fitted size, normalises and cuts them into patches
on ``device``. The size and the resize are the processor's own with resizing on
(``smart_resize`` with the engine's budget as the upper bound and the processor config's
``size.shortest_edge`` as the lower; the uint8 bicubic antialiased kernel reproduced in
integer ops: ``resize_levels``), so any camera size gives the processor's pixels.
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

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

FACTOR = 32
FRAMES = 2
MAX_STAGING = 4          # pinned staging buffers kept (one per frame shape)


def fit_size(h: int, w: int, max_pixels: int, frames: int = FRAMES, factor: int = FACTOR,
             min_pixels: int = 0) -> tuple[int, int]:
    """Target (height, width) for ``frames`` frames of ``h x w``: the Qwen3-VL video
    processor's sizing with ``max_pixels`` / ``min_pixels`` over all frames together."""
    if h <= 0 or w <= 0:
        raise ValueError(f"frame size must be positive, got {w}x{h}")
    if h < factor or w < factor:             # a side under one token: scale up first
        scale = max(factor / h, factor / w)
        h, w = int(h * scale), int(w * scale)
    hb = round(h / factor) * factor
    wb = round(w / factor) * factor
    if frames * hb * wb > max_pixels:
        beta = math.sqrt(frames * h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif frames * hb * wb < min_pixels:      # too small: scale up to the minimum
        beta = math.sqrt(min_pixels / (frames * h * w))
        hb = math.ceil(h * beta / factor) * factor
        wb = math.ceil(w * beta / factor) * factor
    return hb, wb


def _keys_cubic(x: float, a: float = -0.5) -> float:
    """The bicubic kernel of antialiased resizing (Keys, a = -0.5, as PIL and torch use)."""
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@functools.lru_cache(maxsize=64)
def _taps(n_in: int, n_out: int, device: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Source indices ``(n_out, K)``, int16-range fixed-point weights ``(n_out, K)`` (int32)
    and their precision in bits for resizing one axis from ``n_in`` to ``n_out``: the
    weights of torch's uint8 bicubic antialiased kernel (double weights normalised per
    output, scaled by the largest power of two that keeps them in int16, rounded half away
    from zero). Unused taps have weight 0 and index 0."""
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    k_max = math.ceil(support) * 2 + 1
    rows, w_max = [], 0.0
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        size = min(max(min(int(center + support + 0.5), n_in) - lo, 0), k_max)
        w = [_keys_cubic((j + lo - center + 0.5) * inv) for j in range(size)]
        total = sum(w)
        w = [v / total for v in w] if total != 0.0 else w
        w_max = max([w_max, *w])
        rows.append((lo, w))
    bits = 0
    while bits < 22 and int(0.5 + w_max * (1 << (bits + 1))) < (1 << 15):
        bits += 1
    index = np.zeros((n_out, k_max), dtype=np.int64)
    weight = np.zeros((n_out, k_max), dtype=np.int32)
    for i, (lo, w) in enumerate(rows):
        for j, v in enumerate(w):
            v *= 1 << bits
            index[i, j] = lo + j
            weight[i, j] = int(v - 0.5) if v < 0 else int(v + 0.5)
    return torch.from_numpy(index).to(device), torch.from_numpy(weight).to(device), bits


def _resize_first(x: torch.Tensor, n_out: int) -> torch.Tensor:
    """One separable pass along the FIRST axis in int32 (whole rows gathered at once):
    sum of taps x weights, plus half, shifted down by the precision, clamped to 0..255
    (uint8 saturation)."""
    index, weight, bits = _taps(x.shape[0], n_out, str(x.device))
    shape = (n_out,) + (1,) * (x.dim() - 1)
    acc = torch.full((n_out, *x.shape[1:]), 1 << (bits - 1), dtype=torch.int32, device=x.device)
    for k in range(index.shape[1]):
        acc += x[index[:, k]] * weight[:, k].view(shape)
    return (acc >> bits).clamp_(0, 255)


def resize_levels(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """uint8 frames ``(N, 3, H, W)`` resized to ``th x tw`` exactly as the Qwen3-VL video
    processor does it on the CPU: torchvision hands uint8 frames to torch's uint8 bicubic
    antialiased kernel, which runs two separable integer passes (width, then height), each
    rounded and saturated to 0..255. A single float pass differed by up to ~25 levels on
    noisy frames (the processor clamps the first pass's overshoot). On the CPU that kernel
    itself runs; elsewhere ``resize_levels_int`` (the same integer arithmetic in torch ops,
    equal to it level for level: tests/model/test_pixels.py)."""
    if tuple(x.shape[-2:]) == (th, tw):
        return x
    if x.device.type == "cpu":
        return F.interpolate(x, size=(th, tw), mode="bicubic", antialias=True, align_corners=False)
    return resize_levels_int(x, th, tw)


def resize_levels_int(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """``resize_levels`` in int32 torch ops on any device (int32 levels out)."""
    x = x.to(torch.int32).permute(3, 2, 0, 1).contiguous()   # (W, H, N, 3): pass axis first
    if x.shape[0] != tw:
        x = _resize_first(x, tw)
    x = x.transpose(0, 1).contiguous()                   # (H, W, N, 3)
    if x.shape[0] != th:
        x = _resize_first(x, th)
    return x.permute(2, 3, 0, 1)


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
        # the processor's lower bound (size.shortest_edge, over both frames); its upper
        # bound (size.longest_edge) is replaced by the engine's pixel budget
        size = getattr(video_processor, "size", None)
        self.min_pixels = int(getattr(size, "shortest_edge", None) or 0)
        resample = getattr(video_processor, "resample", 3)
        if int(getattr(resample, "value", resample)) != 3:      # PIL's BICUBIC
            raise ValueError(f"the video processor resamples with {resample!r}; the engine "
                             "reproduces bicubic only")
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
        th, tw = self.fit(frames[0].shape[0], frames[0].shape[1])
        if all(f.shape == frames[0].shape for f in frames):
            groups = [self._upload(frames)]
        else:
            groups = [self._upload([f]) for f in frames]
        out = [resize_levels(g.permute(0, 3, 1, 2), th, tw).float() for g in groups]
        return torch.cat(out) if len(out) > 1 else out[0]

    def fit(self, h: int, w: int) -> tuple[int, int]:
        """The fitted (height, width) of a chunk of ``h x w`` frames."""
        return fit_size(h, w, self.max_pixels, min_pixels=self.min_pixels)

    def grid_for(self, h: int, w: int) -> tuple[int, int, int]:
        th, tw = self.fit(h, w)
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
