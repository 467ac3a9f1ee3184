"""``launch.py --local-devices`` as a person uses it: a question spoken into the room is
answered out loud, with captions in the terminal; a camera that vanishes is reported. The room is a private PulseAudio null
sink (tests/devices/test_realtime_pulse.py's fixture): the app's speaker plays into it and
its microphone hears it, so the assistant's own voice reaches the mic as it would through
real speakers. Marked slow (it starts the real app and runs in real time)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.devices.test_realtime_pulse import pulse_room  # noqa: F401 - fixture
from tests.speech import fixtures as fx

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def camera_file(tmp_path):
    import cv2
    path = tmp_path / "cam.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(50):     # noise: ~1 MB, more than the demuxer buffers (see the truncation)
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def test_local_devices_answer_a_spoken_question(pulse_room, camera_file, speech_dir, tmp_path):  # noqa: F811
    question = fx.padded_phrase("What is on the table?", speech_dir, lead_s=0.5, tail_s=0.5)
    out = tmp_path / "app.log"
    with open(out, "w") as log:
        app = subprocess.Popen([sys.executable, "-u", "launch.py", "--preset", "offline", "--local-devices",
                                "--camera", str(camera_file), "--mic", "pulse", "--speaker", "pulse", "--no-proactive",
                                "--recordings-dir", str(tmp_path / "rec")],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 300
        while "is watching and listening" not in out.read_text() and time.monotonic() < deadline:
            assert app.poll() is None, out.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3.0)   # the ALSA pulse plugin takes a moment to start its streams
        for _ in range(3):    # speak the question into the room until it is heard
            subprocess.run(["paplay", f"--device={pulse_room.sink}", str(question.path)], check=True, timeout=30)
            end = time.monotonic() + 20
            while time.monotonic() < end and "AURA:" not in out.read_text():
                time.sleep(0.5)
            if "AURA:" in out.read_text():
                break
        text = out.read_text()
        assert "] you: " in text and "AURA: " in text, text[-3000:]
        assert "AURA (noticed)" not in text, "--no-proactive: nothing is said unasked"
        # the camera vanishes (its file is cut under the reader, as an unplugged webcam
        # fails): one clear line in the terminal, the app keeps running
        os.truncate(camera_file, 0)
        deadline = time.monotonic() + 15
        while "error (camera)" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "stopped delivering frames" in out.read_text(), out.read_text()[-3000:]
        assert app.poll() is None
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
    assert app.returncode == 0, out.read_text()[-2000:]
    # the session was recorded and closed cleanly
    from app.recording.library import list_recordings
    (rec,) = list_recordings(tmp_path / "rec")
    assert rec.complete and rec.n_questions >= 1
