"""One training forward over a batch of samples, through the engine's own pixel path.

Contract:
* ``forward(hf_model, prep, batch) -> (logits (B, L, V), labels, weights)``; ``batch`` is a
  list of ``samples.Sample`` or a ``Prepared`` one.
* Each window chunk's frames go through ``model.pixels.ChunkPixels.prepare`` (what the
  engine's ``VisionEncoder`` does); all chunks of the batch go through the vision tower in
  one call; the merged features replace the ``<|video_pad|>`` embeddings, the deepstack rows
  go in with the visual mask.
* Positions are the samples' explicit 3-row M-RoPE ids (as ``model.reference`` feeds the
  text stack). Samples are right-padded (attention mask; padding is ``IGNORE``d).
  Gradients flow to every weight.
* ``prepare(prep, samples) -> Prepared``: the pixel rows computed ahead (a data worker
  does this on the CPU), the frames dropped; ``forward`` then only uploads them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from model.train.loss import IGNORE


def _cat(x) -> torch.Tensor:
    return torch.cat(list(x), dim=0) if isinstance(x, (tuple, list)) else x


@dataclass(frozen=True, eq=False)
class Prepared:
    samples: list                  # Samples without their frames (chunks=())
    pixels: torch.Tensor | None    # (rows, C*T*P*P) float32, every chunk of the batch in order
    grids: torch.Tensor | None     # (chunks, 3) int64


def pixel_rows(prep, chunks) -> tuple[torch.Tensor, torch.Tensor]:
    rows, grids = zip(*(prep.prepare(fr) for fr in chunks))
    return torch.cat(rows), torch.cat(grids)


def prepare(prep, samples) -> Prepared:
    chunks = [fr for s in samples for fr in s.chunks]
    pix, grids = pixel_rows(prep, chunks) if chunks else (None, None)
    return Prepared([dataclasses.replace(s, chunks=()) for s in samples], pix, grids)


def vision(hf, pix, grids):
    """Merged features ``(n, hidden)`` and the deepstack list for the chunks' pixel rows."""
    pix = pix.to(hf.device, hf.model.visual.dtype, non_blocking=True)
    out = hf.model.get_video_features(pix, grids.to(hf.device))
    if hasattr(out, "pooler_output"):
        embeds, deep = out.pooler_output, out.deepstack_features
    else:
        embeds, deep = out
    return _cat(embeds), [_cat(d) for d in deep]


def forward(hf, prep, batch):
    if isinstance(batch, Prepared):
        samples, pix, grids = batch.samples, batch.pixels, batch.grids
    else:
        samples = batch
        chunks = [fr for s in samples for fr in s.chunks]
        pix, grids = pixel_rows(prep, chunks) if chunks else (None, None)
    dev = hf.device
    B, L = len(samples), max(len(s) for s in samples)
    ids = torch.zeros(B, L, dtype=torch.long)
    pos = torch.zeros(3, B, L, dtype=torch.long)
    labels = torch.full((B, L), IGNORE, dtype=torch.long)
    weights = torch.zeros(B, L)
    att = torch.zeros(B, L, dtype=torch.long)
    for b, s in enumerate(samples):
        n = len(s)
        ids[b, :n], pos[:, b, :n], labels[b, :n], weights[b, :n] = s.ids, s.positions, s.labels, s.weights
        pos[:, b, n:] = s.positions[:, -1:] + 1
        att[b, :n] = 1
    ids, pos, att = ids.to(dev), pos.to(dev), att.to(dev)
    video_pad = hf.config.video_token_id
    mask = (ids == video_pad) & att.bool()
    embeds = hf.get_input_embeddings()(ids)
    deep = None
    if pix is not None:
        feats, deep = vision(hf, pix, grids)
        if int(mask.sum()) != feats.shape[0]:
            raise ValueError(f"{int(mask.sum())} video pads but {feats.shape[0]} vision rows")
        embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        deep = [d.to(embeds.dtype) for d in deep]
    out = hf.model.language_model(inputs_embeds=embeds, attention_mask=att, position_ids=pos,
                                  visual_pos_masks=mask if pix is not None else None,
                                  deepstack_visual_embeds=deep, use_cache=False)
    logits = hf.lm_head(out.last_hidden_state)
    return logits, labels.to(dev), weights.to(dev)
