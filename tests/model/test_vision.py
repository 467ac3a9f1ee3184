"""Chunk frames -> pixel patches -> vision features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.vision import fit_size
from tests.model.conftest import random_frames


def test_fit_size_matches_the_protocol_numbers():
    """640x480 stays full size at the default budget (15x20 = 300 tokens); 1280x720 under
    the benchmark budget becomes 704x384 = 12x22 = 264 tokens."""
    assert fit_size(480, 640, 614_400) == (480, 640)
    assert fit_size(720, 1280, 602_112) == (384, 704)
    assert fit_size(10, 10, 614_400) == (32, 32)
    h, w = fit_size(1080, 1920, 614_400)
    assert h % 32 == 0 and w % 32 == 0 and 2 * h * w <= 614_400


def test_640x480_chunk_is_300_tokens(tiny_model):
    pix, grid = tiny_model.vision.pixels(random_frames(np.random.default_rng(0), size=(480, 640)))
    assert grid.tolist() == [[1, 30, 40]] and pix.shape[0] // 4 == 300


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
