"""Session-scoped, cached speech fixtures wrapping ``tests.speech.fixtures`` helpers."""
from __future__ import annotations

import pytest

from tests.speech import fixtures as fx


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory):
    """One folder per test session for generated speech (espeak/sox output, tiny models)."""
    fx.require_tools()
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def question_phrase(speech_dir):
    """"What is on the table?" with 1 s of silence before and after."""
    return fx.padded_phrase("What is on the table?", speech_dir, lead_s=1.0, tail_s=1.0)


@pytest.fixture(scope="session")
def three_turns(speech_dir):
    """Three utterances separated by 1.5 s pauses: (path, pcm, true bounds)."""
    return fx.conversation(["Hello there.", "What colour is my shirt?", "Thanks, that is all."],
                           speech_dir, name="three-turns")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny random Whisper (CTranslate2) and Coqui VITS, built once per session."""
    from speech.tiny import build
    return build(tmp_path_factory.mktemp("tiny-models"))
