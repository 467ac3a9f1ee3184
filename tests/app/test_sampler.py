"""FrameSampler: any camera rate -> 2 fps, 1-s chunks; partial chunks for questions."""
from __future__ import annotations

import numpy as np
import pytest

from app.events import VideoFrame
from app.sampler import FrameSampler


def _frame(t: float) -> VideoFrame:
    """A frame whose pixel value encodes its time in tenths of a second."""
    return VideoFrame(t, np.full((4, 4, 3), int(round(t * 10)) % 256, dtype=np.uint8))


def _times(chunk) -> list[float]:
    return [int(f[0, 0, 0]) / 10 for f in chunk.frames]


def _feed_all(sampler, times):
    out = []
    for t in times:
        out += sampler.feed(_frame(t))
    return out


def test_30fps_camera_gives_one_chunk_per_second_at_2fps():
    """Each chunk holds the frames nearest its 0.5 s ticks; the last is its end (present)."""
    chunks = _feed_all(FrameSampler(), [k / 30 for k in range(0, 95)])
    assert [(c.index, c.start_s, c.t_s) for c in chunks] == [(0, 0.0, 1.0), (1, 1.0, 2.0), (2, 2.0, 3.0)]
    assert [_times(c) for c in chunks] == [[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]]


def test_nearest_frame_wins_at_an_irregular_rate():
    """~3 fps: the frame closest to each tick, after it (0.6 for 0.5) or before it (0.9
    for 1.0)."""
    chunks = _feed_all(FrameSampler(), [0.0, 0.3, 0.6, 0.9, 1.2])
    assert _times(chunks[0]) == [0.6, 0.9]


def test_slow_camera_repeats_frames_and_gaps_emit_catch_up_chunks():
    """A 1 fps camera fills both ticks; a 3 s gap resolves the missed ticks at once."""
    s = FrameSampler()
    assert _times(_feed_all(s, [0.0, 1.0])[0]) == [1.0, 1.0]
    late = s.feed(_frame(4.0))
    assert [(c.start_s, c.t_s) for c in late] == [(1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]


def test_close_partial_answers_a_question_at_once():
    """A question at 2.7 s closes the open chunk with the frame sampled so far and ends it
    on the newest frame (issue 12 item 6: it repeated the 2.5 s frame, up to 0.5 s older
    than the question, while the system prompt says the final frame is the present); the
    next chunk starts at 2.7 s; indices keep counting."""
    s = FrameSampler()
    _feed_all(s, [k / 10 for k in range(0, 28)])          # chunks 0, 1 done; 2.5 sampled
    part = s.close_partial(2.7)
    assert (part.index, part.start_s, part.t_s, _times(part)) == (2, 2.0, 2.7, [2.5, 2.7])
    nxt = _feed_all(s, [k / 10 for k in range(28, 40)])
    assert [(c.index, c.start_s, c.t_s) for c in nxt] == [(3, 2.7, 3.7)]
    assert _times(nxt[0]) == [3.2, 3.7]


def test_close_partial_before_any_tick_uses_the_latest_frame():
    s = FrameSampler()
    assert s.close_partial(0.1) is None                    # nothing seen yet
    s.feed(_frame(0.0))
    s.feed(_frame(0.2))
    part = s.close_partial(0.3)
    assert _times(part) == [0.2] and (part.start_s, part.t_s) == (0.0, 0.3)


def test_frames_must_not_go_back_in_time():
    s = FrameSampler()
    s.feed(_frame(1.0))
    with pytest.raises(ValueError, match="older"):
        s.feed(_frame(0.5))


def test_close_partial_on_a_sampled_frame_keeps_one():
    """When the newest frame is the one already sampled, the partial chunk holds it once
    (the engine repeats it); a frame after the question time is never used."""
    s = FrameSampler()
    _feed_all(s, [0.0, 0.5])
    assert _times(s.close_partial(0.6)) == [0.5]
    _feed_all(s, [0.7, 1.1, 1.4])                         # tick 1.1 sampled; 1.4 seen
    assert _times(s.close_partial(1.3)) == [1.1]


def test_first_chunk_and_a_restart_begin_at_the_current_frame():
    """Guards issue 13 item 1: a sampler that starts at 0 turns a first frame at 30 s into 30
    chunks at once; after ``restart()`` (reset context) the next chunk starts at the next
    frame and indices go on (unique within a recording)."""
    s = FrameSampler()
    chunks = _feed_all(s, [30 + k / 10 for k in range(0, 21)])
    assert [(c.index, c.start_s, c.t_s) for c in chunks] == [(0, 30.0, 31.0), (1, 31.0, 32.0)]
    s.restart()
    assert s.close_partial(95.0) is None                   # no frame since the restart
    after = _feed_all(s, [91.4 + k / 10 for k in range(0, 11)])
    assert [(c.index, c.start_s) for c in after] == [(2, 91.4)]
    assert abs(after[0].t_s - 92.4) < 1e-9
