"""FastVision: the Qwen3-VL vision encoder for fixed chunk grids, as one CUDA graph.

Contract: ``FastVision(hf_model, grids)`` prepares each ``(t, h, w)`` patch grid (a 640x480
chunk of 2 frames is ``(1, 30, 40)``); ``encode(pixels, grid)`` takes the processor's
``(t*h*w, C*T*P*P)`` pixel rows and returns ``(embeds, deepstack)`` exactly as
``hf_model.model.get_video_features`` does for one video item: ``embeds`` is
``(t*h*w/4, out_hidden)`` and ``deepstack`` a list of such tensors, one per deepstack
layer. Returned tensors belong to the caller. Grids not prepared go through the HF model,
unless ``auto_prepare`` (the engine's setting): then a new grid is prepared on first use.

Why: the HF encoder is ~1000 small launches per chunk and syncs with the host (it turns
``grid_thw`` into Python lists), so on a slow host it costs tens of ms per chunk. Here the
grid-dependent constants (the interpolated position embeddings and the rotary tables) are
read once from the HF encoder itself (a zeroed patch embedding makes the first block's
input equal the position embeddings), then the blocks run on the HF modules' weights with
shapes fixed per grid, captured once on CUDA. Same math as the HF encoder (tested on the
CPU against it); attention over each frame's patches is one batched SDPA call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def hf_video_features(model, pixels: torch.Tensor, grid) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(embeds, deepstack) of one video item through the HF encoder (``model`` is the
    ``Qwen3VLModel``); transformers 5.17 returns unsplit deepstack tensors, 5.23 splits
    them per item: both are handled."""
    p = next(model.visual.parameters())
    out = model.get_video_features(pixels.to(p.device, p.dtype),
                                   torch.tensor([list(grid)], device=p.device))
    return _first(out.pooler_output), [_first(f) for f in out.deepstack_features]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _GridPlan:
    """Constants and (on CUDA) the captured graph of one grid."""

    def __init__(self, grid, pos_embeds, cos, sin):
        self.grid = grid
        self.pos_embeds, self.cos, self.sin = pos_embeds, cos, sin
        self.pixels: torch.Tensor | None = None
        self.outputs: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None


class FastVision:
    def __init__(self, hf_model, grids: list[tuple[int, int, int]], *, use_graphs: bool | None = None,
                 auto_prepare: bool = False):
        self.model = hf_model.model
        self.visual = self.model.visual
        p = next(self.visual.parameters())
        self.device, self.dtype = p.device, p.dtype
        if use_graphs is None:
            use_graphs = self.device.type == "cuda"
        self.use_graphs = bool(use_graphs)
        self.n_heads = self.visual.blocks[0].attn.num_heads
        self.rope_kernel = None
        if self.device.type == "cuda":
            from model.fast.triton_ops import vision_rope
            self.rope_kernel = vision_rope
        self.ds_index = list(self.visual.deepstack_visual_indexes)
        self.auto_prepare = auto_prepare
        self.plans: dict[tuple[int, int, int], _GridPlan] = {}
        for grid in grids:
            self.prepare(grid)

    def prepare(self, grid) -> None:
        """Read ``grid``'s constants and (on CUDA) capture its graph (~0.2 s for the 8B ViT)."""
        grid = tuple(int(x) for x in grid)
        if grid not in self.plans:
            with torch.no_grad():
                self.plans[grid] = self._prepare(grid)

    # ---------------------------------------------------------------- set-up
    def _grid_constants(self, grid):
        """Position embeddings and rotary tables of ``grid``, read off one HF forward."""
        vis, seen = self.visual, {}

        def zero_patches(_mod, _args, out):
            return torch.zeros_like(out)

        def grab(_mod, args, kwargs):
            seen["x"] = (args[0] if args else kwargs["hidden_states"]).clone()
            cos, sin = kwargs["position_embeddings"]
            seen["cos"], seen["sin"] = cos.clone(), sin.clone()

        t, h, w = grid
        n, width = t * h * w, vis.patch_embed.proj.weight[0].numel()
        h1 = vis.patch_embed.register_forward_hook(zero_patches)
        h2 = vis.blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            vis(torch.zeros(n, width, dtype=self.dtype, device=self.device),
                grid_thw=torch.tensor([grid], device=self.device))
        finally:
            h1.remove()
            h2.remove()
        return seen["x"], seen["cos"], seen["sin"]

    def _prepare(self, grid) -> _GridPlan:
        pos, cos, sin = self._grid_constants(grid)
        plan = _GridPlan(grid, pos, cos.float().contiguous(), sin.float().contiguous())
        if not self.use_graphs:
            return plan
        t, h, w = grid
        width = self.visual.patch_embed.proj.weight[0].numel()
        plan.pixels = torch.zeros(t * h * w, width, dtype=self.dtype, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run(plan, plan.pixels)
        torch.cuda.current_stream().wait_stream(side)
        plan.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(plan.graph):
            plan.outputs = self._run(plan, plan.pixels)
        torch.cuda.synchronize()
        return plan

    # ---------------------------------------------------------------- the forward
    def _attention(self, blk, x: torch.Tensor, plan: _GridPlan) -> torch.Tensor:
        t = plan.grid[0]
        n = x.shape[0]
        a = blk.attn
        qkv = a.qkv(x)
        q, k, v = qkv.reshape(n, 3, self.n_heads, -1).permute(1, 0, 2, 3).unbind(0)
        if self.rope_kernel is not None:            # one fused kernel instead of ~14
            q, k = self.rope_kernel(qkv, plan.cos, plan.sin, self.n_heads)
        else:
            cos, sin = plan.cos.unsqueeze(-2).float(), plan.sin.unsqueeze(-2).float()
            qf, kf = q.float(), k.float()
            q = (qf * cos + _rotate_half(qf) * sin).to(x.dtype)
            k = (kf * cos + _rotate_half(kf) * sin).to(x.dtype)
        # each frame attends within itself: batch the t equal-length frames
        q, k, v = (z.reshape(t, n // t, self.n_heads, -1).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, scale=a.scaling)
        return a.proj(o.transpose(1, 2).reshape(n, -1))

    def _run(self, plan: _GridPlan, pixels: torch.Tensor):
        vis = self.visual
        x = vis.patch_embed(pixels) + plan.pos_embeds
        deepstack = []
        for i, blk in enumerate(vis.blocks):
            x = x + self._attention(blk, blk.norm1(x), plan)
            x = x + blk.mlp(blk.norm2(x))
            if i in self.ds_index:
                deepstack.append(vis.deepstack_merger_list[self.ds_index.index(i)](x))
        return vis.merger(x), deepstack

    # ---------------------------------------------------------------- public
    def encode(self, pixels: torch.Tensor, grid) -> tuple[torch.Tensor, list[torch.Tensor]]:
        grid = tuple(int(g) for g in grid)
        if self.auto_prepare:
            self.prepare(grid)
        plan = self.plans.get(grid)
        with torch.no_grad():
            if plan is None:
                return hf_video_features(self.model, pixels, grid)
            if plan.graph is None:
                return self._run(plan, pixels.to(self.device, self.dtype))
            plan.pixels.copy_(pixels, non_blocking=True)
            plan.graph.replay()
            embeds, deepstack = plan.outputs
            return embeds.clone(), [f.clone() for f in deepstack]
