"""A split VLM's device map (model/split.py): every decoder layer placed once, in order."""
from model.split import split_layers, vlm_device_map


def test_split_layers_and_device_map_cover_every_layer_once():
    """A split VLM must place each of the 36 decoder layers exactly once, in order."""
    assert split_layers(36, 2) == [18, 18] and split_layers(36, 5) == [8, 7, 7, 7, 7]
    dmap = vlm_device_map(36, ("cuda:1", "cuda:2", "cuda:3"))
    layers = [dmap[f"model.language_model.layers.{i}"] for i in range(36)]
    assert layers == ["cuda:1"] * 12 + ["cuda:2"] * 12 + ["cuda:3"] * 12
    assert dmap["model.visual"] == "cuda:1" and dmap["lm_head"] == "cuda:3"
    assert dmap["model.language_model.norm"] == "cuda:3"
