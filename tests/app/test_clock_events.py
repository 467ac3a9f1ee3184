"""Clock and event basics that every stage relies on."""
import json

import numpy as np
import pytest

from app.clock import ManualClock, MonotonicClock
from app.events import ReplyEnded, SpeechAudio, StepDecision, to_record


def test_manual_clock_is_virtual_and_monotonic():
    """Tests drive time explicitly; time never runs backwards."""
    c = ManualClock()
    c.sleep(1.5)
    assert c.now() == 1.5
    c.set(2.0)
    with pytest.raises(ValueError):
        c.set(1.0)
    with pytest.raises(ValueError):
        c.advance(-1)


def test_monotonic_clock_starts_near_zero():
    assert 0 <= MonotonicClock().now() < 1.0


def test_to_record_is_json_ready_and_drops_media():
    """events.jsonl lines must serialise and never embed raw audio."""
    rec = to_record(SpeechAudio(t_s=1.23456, reply_id="r1", pcm=np.zeros(16000, np.float32), sample_rate=16000))
    assert rec["type"] == "tts_audio" and "pcm" not in rec and rec["duration_s"] == 1.0
    assert rec["t"] == 1.235
    json.dumps(rec)
    step = to_record(StepDecision(t_s=3.0, decision="silent", p_silent=0.98765, context_tokens=412, step_ms=12.3))
    assert step == {"t": 3.0, "type": "step", "decision": "silent", "p_silent": 0.9877, "context_tokens": 412,
                    "step_ms": 12.3, "chunk_index": 0, "question": None,
                    "p_silent_token": None, "p_im_end": None}
    assert to_record(ReplyEnded(t_s=1, reply_id="r", text="hi", proactive=True, ttft_ms=5))["proactive"] is True
