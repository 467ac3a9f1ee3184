"""Fixtures for the recording tests: espeak-ng voices and one recorded fake session."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.clock import ManualClock
from app.recording.recorder import Recorder
from tests.recording.session_fixture import Voices, feed, make_session, make_voices


@dataclass(frozen=True)
class Recorded:
    root: Path
    path: Path
    story: list
    errors: list


@pytest.fixture(scope="session")
def voices() -> Voices:
    return make_voices()


def record_story(root: Path, story: list, session_id: str = "fake", **kwargs) -> Recorded:
    clock = ManualClock()
    errors: list = []
    rec = Recorder.open(root, session_id, {"test": True}, clock, errors.append, **kwargs)
    feed(rec, clock, story)
    rec.close()
    return Recorded(root, rec.path, story, errors)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory, voices) -> Recorded:
    """A finished recording of the fake session (read-only: copy it before changing it)."""
    return record_story(tmp_path_factory.mktemp("recordings"), make_session(voices))


@pytest.fixture
def recorded_copy(recorded, tmp_path) -> Recorded:
    """A private copy of the fake recording, free to delete or damage."""
    root = tmp_path / "recordings"
    root.mkdir()
    dst = root / recorded.path.name
    shutil.copytree(recorded.path, dst)
    return Recorded(root, dst, recorded.story, recorded.errors)
