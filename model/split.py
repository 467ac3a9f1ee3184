"""A Qwen3-VL language model spread over several GPUs, as a ``from_pretrained`` device map.

- ``split_layers(n_layers, n_devices)``: decoder layers per device, as even as possible;
- ``vlm_device_map(n_layers, devices)``: vision tower and embeddings on the first device,
  final norm and LM head on the last, the decoder layers in between.
Pure: no torch import.
"""
from __future__ import annotations


def split_layers(n_layers: int, n_devices: int) -> list[int]:
    """Decoder layers per device, as even as possible, earlier devices taking the extra."""
    if n_layers < 1 or n_devices < 1:
        raise ValueError("split_layers needs at least one layer and one device")
    base, extra = divmod(n_layers, n_devices)
    return [base + (1 if i < extra else 0) for i in range(n_devices)]


def vlm_device_map(n_layers: int, devices: tuple[str, ...]) -> dict[str, str]:
    """A ``from_pretrained`` device map for Qwen3-VL over ``devices`` (module-name -> device)."""
    first, last = devices[0], devices[-1]
    dmap = {"model.visual": first, "model.language_model.embed_tokens": first,
            "model.language_model.rotary_emb": first}
    layer = 0
    for device, count in zip(devices, split_layers(n_layers, len(devices))):
        for _ in range(count):
            dmap[f"model.language_model.layers.{layer}"] = device
            layer += 1
    dmap["model.language_model.norm"] = last
    dmap["lm_head"] = last
    return dmap
