"""The speech fixtures (espeak phrases) are shared with the device tests."""
from tests.speech.conftest import speech_dir, three_turns  # noqa: F401 - re-exported fixtures
