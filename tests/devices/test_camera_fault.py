"""A camera that vanishes mid-session (issue 3 item 7): one clear error event, the last
frame kept, no crash. Simulated with OpenCVCamera on a video file truncated under it (the
reader's next grabs fail exactly as an unplugged webcam's do)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from app.devices.camera import OpenCVCamera  # noqa: E402


def test_a_vanished_camera_is_one_error_event_and_keeps_its_last_frame(tmp_path):
    path = tmp_path / "cam.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(100):                   # ~2 MB: far more than the demuxer buffers
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    errors = []
    cam = OpenCVCamera(str(path), on_error=errors.append, stall_s=0.5)
    cam.start()
    try:
        deadline = time.monotonic() + 5
        while cam.latest() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        last = cam.latest()
        assert last is not None and last.image.shape == (240, 320, 3)
        os.truncate(path, 0)               # the device is gone
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(errors) == 1
        assert errors[0].source == "camera" and "stopped delivering frames" in errors[0].message
        assert "\n" not in errors[0].message
        assert cam.latest() is not None    # the session keeps its last picture
    finally:
        cam.stop()
