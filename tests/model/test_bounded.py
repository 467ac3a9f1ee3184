"""Bounded over time (issue 2 item 8): a 10-minute synthetic video replayed with the tiny
model through the real replay path keeps the context bounded by the windows (no growth
after the first cut) and the process RSS flat (+-10%) from minute 2 to minute 10."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
psutil = pytest.importorskip("psutil")

from app.replay import Ask, Replayer, read_frames  # noqa: E402
from model.vlm import AuraModel  # noqa: E402
from tests.model.conftest import engine_cfg  # noqa: E402

MINUTES = 10


def _video(path, seconds: int, fps: int = 4, size: int = 64):
    """A moving bright square on a noisy background, 64x64, mp4v."""
    rng = np.random.default_rng(0)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for k in range(seconds * fps):
        frame = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        x = (k * 3) % (size - 16)
        frame[20:36, x:x + 16] = 255
        out.write(frame)
    out.release()
    return path


@pytest.mark.slow
def test_ten_minutes_stay_bounded(tmp_path, tiny_dir):
    model = AuraModel.load(engine_cfg(tiny_dir, video_window_s=30.0, float_window_s=15.0,
                                      qa_window_groups=10, max_new_tokens=16))
    session = model.new_session("long")
    video = _video(tmp_path / "ten.mp4", MINUTES * 60)
    asks = [Ask(5.0, "Tell me when the square reaches the edge."), Ask(20.0, "What is moving?"),
            Ask(70.0, "Is it still there?")]
    proc = psutil.Process()
    steps = []
    for rec in Replayer(session).run(read_frames(video), asks):
        if rec["type"] == "step":
            steps.append((rec["t"], rec["context_tokens"], proc.memory_info().rss))
    assert len(steps) >= MINUTES * 60 - 2
    first_cut = next(t for (t, c), (_, c_prev) in zip(
        [(t, c) for t, c, _ in steps[1:]], [(t, c) for t, c, _ in steps[:-1]]) if c < c_prev)
    assert 45.0 <= first_cut <= 47.0

    def minute(m):
        return [s for s in steps if 60 * m <= s[0] < 60 * (m + 1)]
    ctx_max = [max(c for _, c, _ in minute(m)) for m in range(2, MINUTES)]
    print("context max per minute 2..9:", ctx_max, "rss MB", [round(r / 2**20) for t, _, r in steps[::60]])
    assert max(ctx_max[1:]) <= ctx_max[0] * 1.05, ctx_max          # no growth after minute 2
    after_first_cut = max(c for t, c, _ in steps if t > first_cut)
    before_first_cut = max(c for t, c, _ in steps if t <= first_cut)
    assert after_first_cut <= before_first_cut * 1.5, (after_first_cut, before_first_cut)

    rss = [r for t, _, r in steps if t >= 120.0]
    ref = float(np.median([r for t, _, r in steps if 120.0 <= t < 180.0]))
    assert max(rss) <= 1.10 * ref and min(rss) >= 0.90 * ref, (min(rss) / ref, max(rss) / ref)
