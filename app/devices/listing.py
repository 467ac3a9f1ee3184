"""``python launch.py --list-devices``: what microphones, speakers and cameras are attached.

Contract: ``list_devices() -> str`` returns a human-readable table (never raises): the
sounddevice/PortAudio devices with index, channel counts, default rate and which are the
defaults, then the cameras (``/dev/video*`` on Linux; indices 0-3 probed with OpenCV
elsewhere). Use an index or a unique part of a name with the app's microphone/speaker
settings and an index or a video file for the camera. A missing library becomes one
line in the table saying how to install it.
"""
from __future__ import annotations

import glob
import sys

from app.devices.base import DeviceError


def _audio_lines() -> list[str]:
    from app.devices.sound import _import_sounddevice
    try:
        sd = _import_sounddevice()
        devices = sd.query_devices()
        default_in, default_out = sd.default.device
    except DeviceError as e:
        return [f"  (unavailable: {e})"]
    except sd.PortAudioError as e:
        return [f"  (PortAudio error: {e})"]
    if len(devices) == 0:
        return ["  (no audio devices found)"]
    lines = [f"  {'idx':>3}  {'in':>3}  {'out':>3}  {'rate':>6}  name"]
    for i, d in enumerate(devices):
        marks = [m for m, is_default in (("default input", i == default_in), ("default output", i == default_out))
                 if is_default]
        suffix = f"   ({', '.join(marks)})" if marks else ""
        lines.append(f"{'*' if marks else ' '} {i:>3}  {d['max_input_channels']:>3}  {d['max_output_channels']:>3}  "
                     f"{int(d['default_samplerate']):>6}  {d['name']}{suffix}")
    return lines


def _camera_lines() -> list[str]:
    if sys.platform.startswith("linux"):
        nodes = sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))
        if not nodes:
            return ["  (no /dev/video* devices: use a video file path as the camera)"]
        return [f"  {p[len('/dev/video'):]:>3}  {p}" for p in nodes]
    try:
        import cv2
    except ImportError:
        return ["  (opencv not installed: pip install opencv-python)"]
    found = []
    for i in range(4):
        cap = cv2.VideoCapture(i)
        if cap.isOpened():
            found.append(f"  {i:>3}  camera {i}")
        cap.release()
    return found or ["  (no cameras found: use a video file path as the camera)"]


def list_devices() -> str:
    lines = ["Audio devices (sounddevice / PortAudio; * = default):"]
    lines += _audio_lines()
    lines += ["", "Cameras (index or a video file path):"]
    lines += _camera_lines()
    return "\n".join(lines)
