"""The pure turn-taking policy, driven event by event with explicit times."""
import numpy as np

from app.events import (BargeIn, ContextReset, ErrorEvent, SettingChanged, Latency, ReplyDelta, ReplyEnded, ReplyStarted,
                        SpeechEnded, SpeechStarted, StatusChanged, StepDecision, UserText, VideoChunk)
from app.orchestrator import (MAX_BACKLOG, CancelReply, ClosePartialChunk, NoAudio, Orchestrator,
                              PlaybackFinished, PlaybackStarted, Publish, ResetContext, ResetEngine,
                              RunStep, SetOption, Settings, Speak, SpeakEnd, StepFinished, StopAudio,
                              Transcribe)

FRAME = np.zeros((4, 4, 3), np.uint8)


def chunk(i, end=None, start=None):
    end = float(i + 1) if end is None else end
    return VideoChunk(t_s=end, start_s=float(i) if start is None else start, frames=(FRAME, FRAME), index=i)


def kinds(cmds, cls):
    return [c for c in cmds if isinstance(c, cls)]


def published(cmds, cls):
    return [c.event for c in cmds if isinstance(c, Publish) and isinstance(c.event, cls)]


def test_one_step_per_chunk_in_order_and_one_in_flight():
    """Steps must run in chunk order, never two at once for a session."""
    o = Orchestrator()
    assert [c.chunk.index for c in kinds(o.handle(chunk(0), 1.0), RunStep)] == [0]
    assert kinds(o.handle(chunk(1), 2.0), RunStep) == []          # waits for step 0
    steps = kinds(o.handle(StepFinished(2.1, 0), 2.1), RunStep)
    assert [c.chunk.index for c in steps] == [1] and steps[0].question is None and steps[0].allow_speak


def test_backlog_drops_oldest_and_reports_once():
    """A slow engine must not queue video without bound, nor spam errors each second."""
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    errors = []
    for i in range(1, MAX_BACKLOG + 4):
        errors += published(o.handle(chunk(i), i + 1.0), ErrorEvent)
    assert len(errors) == 1 and "slower than real time" in errors[0].message
    cmds = o.handle(StepFinished(9, 0), 9)
    nxt = kinds(cmds, RunStep)[0]
    assert nxt.chunk.index == MAX_BACKLOG + 3 - MAX_BACKLOG + 1
    # only what the model sees is published (recorded): the dropped chunks are not
    assert [c.index for c in published(cmds, VideoChunk)] == [nxt.chunk.index]


def test_question_closes_partial_chunk_and_rides_on_it():
    """A question is answered at once: the partial chunk closes and carries it."""
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(StepFinished(1.05, 0), 1.05)
    cmds = o.handle(UserText(1.4, "what is this?", speech_end_s=1.1), 1.4)
    assert kinds(cmds, ClosePartialChunk) and published(cmds, UserText)[0].text == "what is this?"
    step = kinds(o.handle(chunk(1, end=1.4, start=1.0), 1.4), RunStep)[0]
    assert step.question.text == "what is this?" and step.chunk.t_s == 1.4


def test_question_not_attached_to_an_older_backlog_chunk():
    """Video from before the question must not carry it (the model would see it too early)."""
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(chunk(1), 2.0)                       # waiting in the backlog, ends at 2.0
    o.handle(UserText(2.3, "now?"), 2.3)
    step1 = kinds(o.handle(StepFinished(2.4, 0), 2.4), RunStep)[0]
    assert step1.chunk.index == 1 and step1.question is None
    o.handle(chunk(2, end=2.3, start=2.0), 2.4)
    step2 = kinds(o.handle(StepFinished(2.5, 1), 2.5), RunStep)[0]
    assert step2.question.text == "now?"


def test_proactive_off_forbids_speaking_without_a_question():
    o = Orchestrator(Settings(proactive=False))
    assert kinds(o.handle(chunk(0), 1.0), RunStep)[0].allow_speak is False
    o.handle(StepFinished(1.1, 0), 1.1)
    o.handle(UserText(1.2, "hi"), 1.2)
    assert kinds(o.handle(chunk(1, end=1.2), 1.2), RunStep)[0].allow_speak is True


def test_reply_is_spoken_and_latency_reported_at_first_audio():
    """The latency line must cover speech end -> transcript -> first token -> first audio."""
    o = Orchestrator()
    o.handle(UserText(0.6, "hello", speech_end_s=0.3), 0.6)
    o.handle(chunk(0, end=0.6, start=0.0), 0.6)
    o.handle(StepDecision(0.7, "speak", 0.1, 400, 50.0), 0.7)
    cmds = o.handle(ReplyStarted(0.72, "s-r1", proactive=False), 0.72)
    assert o.status == "thinking"
    assert kinds(o.handle(ReplyDelta(0.73, "s-r1", "Hi there."), 0.73), Speak)
    assert kinds(o.handle(ReplyEnded(0.8, "s-r1", "Hi there.", False, 20.0), 0.8), SpeakEnd)
    o.handle(StepFinished(0.8, 0), 0.8)
    cmds = o.handle(PlaybackStarted(1.0, "s-r1"), 1.0)
    lat = published(cmds, Latency)[0]
    assert (lat.speech_end_s, lat.transcript_s, lat.first_token_s, lat.first_audio_s) == (0.3, 0.6, 0.72, 1.0)
    assert published(cmds, StatusChanged)[-1].state == "speaking"
    o.handle(PlaybackFinished(2.0, "s-r1"), 2.0)
    assert o.status == "watching"


def test_barge_in_cancels_generation_and_audio_and_mutes_late_deltas():
    """After a barge-in, nothing more of that reply may be generated or heard."""
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(ReplyStarted(1.1, "s-r1", proactive=True), 1.1)
    o.handle(ReplyDelta(1.2, "s-r1", "The kettle"), 1.2)
    o.handle(PlaybackStarted(1.3, "s-r1"), 1.3)
    cmds = o.handle(BargeIn(1.6, "s-r1"), 1.6)
    assert CancelReply("s-r1") in cmds and StopAudio("s-r1") in cmds
    assert kinds(o.handle(ReplyDelta(1.7, "s-r1", " is boiling."), 1.7), Speak) == []
    assert kinds(o.handle(ReplyEnded(1.8, "s-r1", "The kettle", True, 5.0, cancelled=True), 1.8), SpeakEnd) == []
    assert kinds(o.handle(PlaybackStarted(1.9, "s-r1"), 1.9), StopAudio)   # a straggler is stopped


def test_new_question_cancels_the_running_reply():
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(ReplyStarted(1.1, "s-r1", proactive=True), 1.1)
    cmds = o.handle(UserText(1.5, "stop, what colour is it?"), 1.5)
    assert CancelReply("s-r1") in cmds and kinds(cmds, ClosePartialChunk)


def test_speech_end_is_transcribed_and_status_follows_the_user():
    o = Orchestrator()
    assert published(o.handle(SpeechStarted(0.5), 0.5), StatusChanged)[0].state == "listening"
    utt = SpeechEnded(1.5, 0.5, np.zeros(16000, np.float32))
    cmds = o.handle(utt, 1.5)
    assert Transcribe(utt) in cmds
    assert o.status == "watching"


def test_voice_off_stops_audio_and_still_reports_latency():
    o = Orchestrator()
    o.handle(ReplyStarted(0.1, "s-r0", proactive=True), 0.1)
    o.handle(PlaybackStarted(0.2, "s-r0"), 0.2)
    cmds = o.handle(SetOption(0.3, "voice", False), 0.3)
    assert StopAudio("s-r0") in cmds and published(cmds, SettingChanged)[0].value is False
    o.handle(UserText(0.4, "hi", speech_end_s=0.35), 0.4)
    o.handle(chunk(0, end=0.4, start=0.0), 0.4)
    o.handle(ReplyStarted(0.5, "s-r1", proactive=False), 0.5)
    assert kinds(o.handle(ReplyDelta(0.55, "s-r1", "Hello."), 0.55), Speak) == []
    cmds = o.handle(ReplyEnded(0.6, "s-r1", "Hello.", False, 10.0), 0.6)
    lat = published(cmds, Latency)[0]
    assert lat.first_audio_s is None and lat.first_token_s == 0.5


def test_reset_clears_queue_and_resets_engine():
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(chunk(1), 2.0)
    cmds = o.handle(ResetContext(2.1), 2.1)
    assert kinds(cmds, ResetEngine) and published(cmds, ContextReset)
    assert kinds(o.handle(StepFinished(2.2, 0), 2.2), RunStep) == []


def test_two_questions_before_a_chunk_are_joined():
    """Two quick utterances must reach the model together, not lose the first."""
    o = Orchestrator()
    o.handle(chunk(0), 1.0)
    o.handle(UserText(1.2, "Look at this."), 1.2)
    o.handle(UserText(1.3, "What is it?"), 1.3)
    o.handle(chunk(1, end=1.3, start=1.0), 1.3)
    step = kinds(o.handle(StepFinished(1.4, 0), 1.4), RunStep)[0]
    assert step.question.text == "Look at this. What is it?"


def test_unspeakable_reply_still_reports_its_latency():
    """A reply with nothing to say aloud (emoji, symbols) must not leave the turn unmeasured."""
    o = Orchestrator()
    o.handle(UserText(0.5, "hi", speech_end_s=0.4), 0.5)
    o.handle(chunk(0, end=0.5, start=0.0), 0.5)
    o.handle(ReplyStarted(0.6, "s-r1", proactive=False), 0.6)
    o.handle(ReplyEnded(0.7, "s-r1", "🙂", False, 10.0), 0.7)
    lat = published(o.handle(NoAudio(0.75, "s-r1"), 0.75), Latency)[0]
    assert lat.first_token_s == 0.6 and lat.first_audio_s is None
