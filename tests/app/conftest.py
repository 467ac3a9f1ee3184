"""Pipeline fixtures: the real runtime (app/build.py) on tiny models, file-backed devices.

The tiny AURA here is built to always speak (``silent_fraction=0``), so a question always
gets a reply and proactive remarks happen whenever they are allowed: the tests control
which path runs through the session settings, not through luck.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from app.config import AppConfig, Config, EngineConfig, SpeechConfig


@pytest.fixture(scope="session")
def talkative_tiny(tmp_path_factory) -> Path:
    from model.tiny import build
    return build(tmp_path_factory.mktemp("aura-talkative"), seed=0, silent_fraction=0.0)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    from speech.tiny import build
    return build(tmp_path_factory.mktemp("speech-tiny"))["whisper"]


@pytest.fixture(scope="session")
def pipeline_config(talkative_tiny, tiny_whisper, tmp_path_factory) -> Config:
    return Config(
        engine=EngineConfig(model=str(talkative_tiny), device="cpu", video_window_s=6.0,
                            float_window_s=3.0, qa_window_groups=2, max_new_tokens=5),
        speech=SpeechConfig(asr_model=str(tiny_whisper), tts="espeak"),
        app=AppConfig(max_sessions=2, record=False,
                      recordings_dir=str(tmp_path_factory.mktemp("recordings"))))


@pytest.fixture(scope="session")
def runtime(pipeline_config):
    from app.build import build_runtime
    rt = build_runtime(pipeline_config, lambda msg: None, n_gpus=0)
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def camera_video(tmp_path_factory) -> Path:
    """8 s of 160x120 video at 10 fps: a moving square and a frame counter."""
    import cv2
    path = tmp_path_factory.mktemp("video") / "cam.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for i in range(80):
        img = np.full((120, 160, 3), 40, np.uint8)
        x = 10 + (i * 3) % 120
        cv2.rectangle(img, (x, 40), (x + 30, 70), (0, 200, 255), -1)
        cv2.putText(img, str(i), (5, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
        writer.write(img)
    writer.release()
    return path


@dataclass
class Run:
    """One live session on file-backed devices, and everything it published."""
    session: object
    view: object
    speaker: object
    mic: object
    camera: object
    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, cls) -> list:
        with self.lock:
            return [e for e in self.events if isinstance(e, cls)]

    def wait(self, predicate, timeout_s: float = 40.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate(self):
                return True
            time.sleep(0.05)
        return False


def start_run(manager, camera_video: Path, mic_wav: Path, echo_gain: float = 0.0) -> Run:
    """Open a session through the manager with FileCamera + WavMicrophone + WavSpeaker."""
    from app.clock import MonotonicClock
    from app.devices.camera import FileCamera
    from app.devices.twins import WavMicrophone, WavSpeaker
    from app.local import LocalIO
    from tests.speech.fixtures import room_mix
    clock = MonotonicClock()
    camera = FileCamera(camera_video, clock, loop=True)
    camera.start()
    speaker = WavSpeaker(clock)
    session = manager.open(LocalIO(camera, speaker, clock))
    assert session is not None
    view = manager.get(session.session_id)[1]
    mix = room_mix(speaker, gain=echo_gain) if echo_gain else None
    mic = WavMicrophone(mic_wav, clock, mix=mix)
    run = Run(session, view, speaker, mic, camera)

    def tap(ev):
        with run.lock:
            run.events.append(ev)
    session.add_listener(tap)
    mic.start(session.post_audio, session.post)
    return run


def stop_run(manager, run: Run) -> None:
    run.mic.stop()
    manager.close(run.session.session_id)
    run.speaker.stop()
    run.camera.stop()
