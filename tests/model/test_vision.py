"""Chunk frames -> pixel patches -> vision features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.vision import fit_size
from tests.model.conftest import engine_cfg, random_frames


def test_fit_size_matches_the_protocol_numbers():
    """The two budgets the authors ran (protocol section 1, issue 12 item 5): benchmark
    602,112 -> 640x480 is 448x608 = 14x19 = 266 tokens, 1280x720 384x704 = 12x22 = 264;
    demo 786,432 -> 640x480 stays 480x640 = 300 tokens, 1280x720 is 448x832 = 14x26 = 364."""
    assert fit_size(480, 640, 602_112) == (448, 608)
    assert fit_size(720, 1280, 602_112) == (384, 704)
    assert fit_size(480, 640, 786_432) == (480, 640)
    assert fit_size(720, 1280, 786_432) == (448, 832)
    assert fit_size(10, 10, 614_400) == (32, 32)
    h, w = fit_size(1080, 1920, 614_400)
    assert h % 32 == 0 and w % 32 == 0 and 2 * h * w <= 614_400
    assert fit_size(130, 100, 602_112, min_pixels=131_072) == (320, 256)    # the processor's upscale


def test_default_pixel_budget_is_the_benchmarks(tiny_dir):
    """Guards issue 12 item 5: the default was 614,400, a budget the authors never ran
    (1280x720 -> 276 tokens, neither the benchmark's 264 nor the demo's 364). Both of
    theirs are offered by name, or a number; anything else is one clear error."""
    from app.config import EngineConfig, build_config
    assert EngineConfig().pixel_budget == "benchmark" and EngineConfig().max_pixels == 602_112
    assert EngineConfig(pixel_budget="demo").max_pixels == 786_432
    assert build_config({"engine": {"pixel_budget": 614400}}).engine.max_pixels == 614_400
    for bad in ("huge", "-5", "100", "1e6"):
        with pytest.raises(ValueError, match="engine.pixel_budget"):
            EngineConfig(pixel_budget=bad)
    import launch
    args = launch.app_parser().parse_args(["--pixel-budget", "demo"])
    assert launch.load_config(args).engine.max_pixels == 786_432


def test_640x480_chunk_tokens_follow_the_budget(tiny_dir):
    """The chunk's grid is the budget's: 266 tokens (benchmark), 300 (demo)."""
    from model.vlm import AuraModel
    frames = random_frames(np.random.default_rng(0), size=(480, 640))
    for budget, grid, tokens in (("benchmark", [1, 28, 38], 266), ("demo", [1, 30, 40], 300)):
        model = AuraModel.load(engine_cfg(tiny_dir, pixel_budget=budget))
        pix, g = model.vision.pixels(frames)
        assert g.tolist() == [grid] and pix.shape[0] // 4 == tokens


def test_partial_chunk_is_padded_by_repeating_its_frame(tiny_model):
    """A question closes a chunk after one frame; it must equal a chunk of that frame twice."""
    f = random_frames(np.random.default_rng(1), n=1)
    one, two = tiny_model.vision.encode(f), tiny_model.vision.encode(f + f)
    assert one.grid_hw == two.grid_hw == (2, 2)
    assert torch.equal(one.embeds, two.embeds)
    assert len(one.deepstack) == 2 and all(torch.equal(a, b) for a, b in zip(one.deepstack, two.deepstack))


def test_frames_are_resized_to_the_first_frames_fitted_size(tiny_model):
    """Odd sizes are resized (multiples of 32); a second frame of another size follows."""
    rng = np.random.default_rng(2)
    frames = (random_frames(rng, 1, (70, 100))[0], random_frames(rng, 1, (50, 50))[0])
    feats = tiny_model.vision.encode(frames)
    assert feats.grid_hw == (2, 3) and feats.embeds.shape == (6, 64)


def test_bad_frames_are_refused(tiny_model):
    with pytest.raises(ValueError, match="RGB uint8"):
        tiny_model.vision.encode((np.zeros((64, 64), dtype=np.uint8),))
    with pytest.raises(ValueError, match="1 or 2 frames"):
        tiny_model.vision.encode(())


def test_max_pixels_still_sets_the_budget():
    """``max_pixels`` was the budget's field before ``pixel_budget``; code and config files
    that set it (model/train does) keep working, and a contradiction is refused."""
    from dataclasses import replace

    from app.config import EngineConfig, build_config
    cfg = EngineConfig(max_pixels=2 * 64 * 64)
    assert cfg.max_pixels == 8192 and cfg.pixel_budget == "8192"
    assert replace(cfg, pixel_budget="demo").max_pixels == 786_432
    assert EngineConfig(max_pixels=786_432, pixel_budget="demo").max_pixels == 786_432
    assert build_config({"engine": {"max_pixels": "614400"}}).engine.max_pixels == 614_400
    with pytest.raises(ValueError, match="engine.max_pixels"):
        EngineConfig(max_pixels=8192, pixel_budget="demo")
