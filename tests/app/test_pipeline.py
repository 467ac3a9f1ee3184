"""The whole pipeline in-process: camera + mic files -> VAD -> ASR -> engine -> TTS -> speaker.

Real threads, real clock, tiny real models (app/build.py's runtime), file-backed devices.
Each test names the path it needs and the session settings make that path happen.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.events import (BargeIn, ErrorEvent, Latency, ReplyEnded, ReplyStarted, SpeechAudio,
                        StepDecision, UserText)
from app.sessions import SessionManager
from tests.app.conftest import start_run, stop_run
from tests.speech.fixtures import mic_track, padded_phrase


def _manager(runtime, config, proactive: bool, hands_free: bool = True):
    from dataclasses import replace
    from app.clock import MonotonicClock
    cfg = replace(config, app=replace(config.app, proactive=proactive, hands_free=hands_free))
    return SessionManager(runtime, cfg, MonotonicClock)


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline-speech")
    question = padded_phrase("What is on the table?", d, lead_s=1.5, tail_s=2.5)
    silence = mic_track(d, 6.0, name="silence")
    return question, silence, d


def test_spoken_question_gets_caption_reply_and_voice(runtime, pipeline_config, camera_video, speech_files):
    """Guards the main path: a spoken question must become a user caption, be answered at
    once (its own step, not proactive), and the answer must be spoken for that reply id."""
    question, _silence, _ = speech_files
    manager = _manager(runtime, pipeline_config, proactive=False)
    run = start_run(manager, camera_video, question.path)
    try:
        def answered(r):
            replies = [e for e in r.of(ReplyEnded) if not e.proactive]
            return replies and r.speaker.segments(replies[0].reply_id) and r.of(Latency)
        assert run.wait(answered), f"no spoken answer; events: {[type(e).__name__ for e in run.events][-30:]}"
        user = run.of(UserText)[0]
        assert user.source == "voice" and user.text and user.speech_end_s is not None
        # the question was detected near where it really ends, and answered within the chunk
        assert abs(user.speech_end_s - question.speech_end_s) < 0.5
        step = next(s for s in run.of(StepDecision) if s.question)
        assert step.decision == "speak" and step.t_s >= user.t_s - 1e-6
        assert step.t_s - user.t_s < 1.0, "the question waited for the next full chunk"
        reply = next(e for e in run.of(ReplyEnded) if not e.proactive)
        assert reply.reply_id.startswith(run.session.session_id)
        spoken = run.speaker.segments(reply.reply_id)
        assert sum(len(s.pcm16k) for s in spoken) > 0
        # nothing proactive was said (proactive remarks are off)
        assert not [e for e in run.of(ReplyStarted) if e.proactive]
        lat = run.of(Latency)[0]
        assert lat.speech_end_s <= lat.transcript_s <= lat.first_token_s <= lat.first_audio_s
        state = run.view.state()
        assert [c.who for c in state.captions][:2] == ["user", "assistant"]
    finally:
        stop_run(manager, run)


def test_proactive_remark_flows_through_the_same_path(runtime, pipeline_config, camera_video, speech_files):
    """With proactive remarks on and nobody talking, the model's own remark must reach the
    captions (marked proactive) and the speaker."""
    _q, silence, _ = speech_files
    manager = _manager(runtime, pipeline_config, proactive=True)
    run = start_run(manager, camera_video, silence)
    try:
        def remarked(r):
            done = [e for e in r.of(ReplyEnded) if e.proactive and not e.cancelled]
            return done and r.speaker.segments(done[0].reply_id)
        assert run.wait(remarked)
        assert not run.of(UserText)
        assert any(c.proactive for c in run.view.state().captions)
    finally:
        stop_run(manager, run)


def test_barge_in_stops_the_reply_everywhere(runtime, pipeline_config, camera_video, speech_files):
    """A user talking over the assistant (its own voice echoing into the mic too) must stop
    the reply: generation cancelled, its audio cut, and the user then heard."""
    _q, _s, d = speech_files
    talker = padded_phrase("Stop, stop. Wait a moment please, I have a question for you.", d,
                           lead_s=0.0, tail_s=0.0).pcm
    wav = mic_track(d, 9.0, talker=talker, talker_at_s=3.5, talker_gain=0.8, name="barge")
    manager = _manager(runtime, pipeline_config, proactive=True)
    run = start_run(manager, camera_video, wav, echo_gain=0.3)
    try:
        assert run.wait(lambda r: r.of(BargeIn), timeout_s=45.0), "no barge-in"
        barge = run.of(BargeIn)[0]
        assert barge.t_s >= 3.5, "the assistant's own echo triggered a barge-in"
        # the interrupted reply's audio stops at the barge-in (speaker flushed)
        cut = [s for s in run.speaker.segments(barge.reply_id)]
        assert cut and max(s.end_s for s in cut) <= barge.t_s + 0.3
        assert run.wait(lambda r: r.of(UserText), timeout_s=30.0), "the user was not heard after barging in"
    finally:
        stop_run(manager, run)


def test_two_sessions_are_isolated_and_a_failure_stays_in_its_session(runtime, pipeline_config,
                                                                      camera_video, speech_files):
    """Two people at once: one asks, one does not; each sees only its own conversation,
    and an exception inside one session does not stop the other."""
    question, silence, _ = speech_files
    manager = _manager(runtime, pipeline_config, proactive=False)
    a = start_run(manager, camera_video, question.path)
    b = start_run(manager, camera_video, silence)
    try:
        assert manager.open(object()) is None, "a third session was admitted past max_sessions=2"
        assert a.wait(lambda r: [e for e in r.of(ReplyEnded) if not e.proactive])
        assert b.wait(lambda r: len(r.of(StepDecision)) >= 4)
        assert not b.of(UserText) and not b.of(ReplyEnded)
        assert all(e.reply_id.startswith(a.session.session_id) for e in a.of(ReplyEnded))
        assert not any(c.who == "user" for c in b.view.state().captions)

        # break session A's camera: A reports it and resets; B keeps stepping
        def broken():
            raise RuntimeError("camera exploded")
        a.session._io.latest_frame = broken
        assert a.wait(lambda r: any("camera exploded" in e.message for e in r.of(ErrorEvent)))
        steps_before = len(b.of(StepDecision))
        assert b.wait(lambda r: len(r.of(StepDecision)) >= steps_before + 2)
    finally:
        stop_run(manager, a)
        stop_run(manager, b)
    assert manager.count == 0


def test_typed_question_and_tts_audio_events(runtime, pipeline_config, camera_video, speech_files):
    """A typed question takes the same path as a spoken one; the TTS audio events that
    reach listeners (the recorder) belong to the reply and end with a last marker."""
    _q, silence, _ = speech_files
    manager = _manager(runtime, pipeline_config, proactive=False)
    run = start_run(manager, camera_video, silence)
    try:
        assert run.wait(lambda r: len(r.of(StepDecision)) >= 2)
        run.session.ask("Is the door open?")
        assert run.wait(lambda r: any(a.last for a in r.of(SpeechAudio)))
        user = run.of(UserText)[0]
        assert user.source == "typed" and user.text == "Is the door open?"
        reply = next(e for e in run.of(ReplyEnded) if not e.proactive)
        assert {a.reply_id for a in run.of(SpeechAudio)} == {reply.reply_id}
    finally:
        stop_run(manager, run)


def test_recorded_session_replays_to_identical_decisions(runtime, pipeline_config, camera_video,
                                                         speech_files, tmp_path):
    """Guards issue 5's promise: a live session is recorded (the frames the model saw, the
    mic, the assistant's voice, events) and replaying that recording through the same
    models gives the same decisions and replies."""
    from dataclasses import replace
    from app.clock import MonotonicClock
    from app.main import recorder_factory
    from app.recording.library import list_recordings, read_events
    from app.recording.rerun import replay_recording
    question, _silence, _ = speech_files
    cfg = replace(pipeline_config, app=replace(pipeline_config.app, proactive=False, record=True,
                                               recordings_dir=str(tmp_path / "rec")))
    manager = SessionManager(runtime, cfg, MonotonicClock, recorder_factory(cfg))
    run = start_run(manager, camera_video, question.path)
    try:
        assert run.wait(lambda r: r.of(Latency) and len(r.of(StepDecision)) >= 6)
    finally:
        stop_run(manager, run)
    (info,) = list_recordings(tmp_path / "rec")
    assert info.complete and info.n_questions == 1 and info.n_replies >= 1
    rec_dir = tmp_path / "rec" / info.id
    types = [e["type"] for e in read_events(rec_dir / "events.jsonl")]
    assert types.count("chunk") == types.count("step") >= 6
    for name in ("video.mp4", "mic.wav", "assistant.wav"):
        assert (rec_dir / name).stat().st_size > 0, name

    result = replay_recording(cfg, rec_dir, tmp_path / "replay", lambda m: None)
    assert result["identical_decisions"], result["steps"]
    assert result["steps"]["compared"] == types.count("step")
    assert result["replies"]["changed"] == []
    assert (tmp_path / "replay" / "comparison.md").is_file()


def test_push_to_talk_hears_only_what_is_said_while_pressed(runtime, pipeline_config, camera_video,
                                                            speech_files):
    """Hands-free off: a question spoken while Talk is not pressed is ignored; the same
    question said while it is held becomes one voice question, answered once it is released."""
    import time
    question, _silence, d = speech_files
    from tests.speech.fixtures import SAMPLE_RATE
    twice = mic_track(d, 2 * len(question.pcm) / SAMPLE_RATE, talker=np.concatenate([question.pcm] * 2),
                      talker_gain=1.0, name="question-twice")
    period = len(question.pcm) / SAMPLE_RATE
    manager = _manager(runtime, pipeline_config, proactive=False, hands_free=False)
    t0 = time.monotonic()
    run = start_run(manager, camera_video, twice)
    try:
        time.sleep(max(0.0, t0 + period - 0.6 - time.monotonic()))   # the first question is over
        assert not run.of(UserText), "a question was heard while Talk was not pressed"
        run.session.push_to_talk(True)
        assert run.wait(lambda r: r.session.snapshot().ptt_active, 5)
        time.sleep(max(0.0, t0 + period + question.speech_end_s + 0.4 - time.monotonic()))
        run.session.push_to_talk(False)
        assert run.wait(lambda r: [e for e in r.of(ReplyEnded) if not e.proactive]), \
            f"no answer; events: {[type(e).__name__ for e in run.events][-30:]}"
        (user,) = run.of(UserText)
        assert user.source == "voice" and user.text
        assert not run.session.snapshot().ptt_active
    finally:
        stop_run(manager, run)
