"""Shared set-up for the browser tests that start their own app (queue, phone).

- ``make_media(dir)``: a y4m test pattern (camera) and a wav with a spoken question then
  quiet (microphone), as Chromium's fake devices.
- ``serving(args, tmp, scheme)``: ``python3 launch.py --preset offline --port P *args`` in a
  subprocess until the page answers; yields ``{"url", "port", "log"}`` and stops it after.
- ``chromium(playwright, media, extra_args)``: headless Debian Chromium with the fake devices.
- ``wait_text(page, selector, predicate, timeout_s)``: the element's text once ``predicate``
  holds (or the last text seen).
- ``webcam_button(page)``: the video's "Click to Access Webcam" button (by role: the idle hint
  in the status bar quotes the same words).
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--autoplay-policy=no-user-gesture-required"]
QUIET_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webcam_button(page):
    return page.get_by_role("button", name="Click to Access Webcam")


def make_media(d: Path) -> dict[str, Path]:
    if not shutil.which("ffmpeg") or not shutil.which("espeak-ng") or not Path(CHROMIUM).exists():
        pytest.skip("needs ffmpeg, espeak-ng and chromium")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=10", "-t", "6", "-pix_fmt", "yuv420p", str(d / "cam.y4m")],
                   check=True)
    subprocess.run(["espeak-ng", "-w", str(d / "q.wav"), "What is on the table?"], check=True)
    subprocess.run(["sox", "-q", "-n", "-r", "22050", "-c", "1", str(d / "sil.wav"), "trim", "0", "1.5"], check=True)
    subprocess.run(["sox", "-q", str(d / "sil.wav"), str(d / "q.wav"), *[str(d / "sil.wav")] * 6,
                    "-r", "48000", "-c", "1", str(d / "mic.wav")], check=True)
    return {"cam": d / "cam.y4m", "mic": d / "mic.wav"}


@contextlib.contextmanager
def serving(args: list[str], tmp: Path, scheme: str = "http", url_host: str = "127.0.0.1"):
    port = free_port()
    log = tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "launch.py", "--preset", "offline", "--port", str(port), *args],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"{scheme}://{url_host}:{port}/"
    unverified = ssl._create_unverified_context()     # the test's own self-signed certificate
    deadline = time.monotonic() + 420                  # the first run builds the tiny models
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=unverified) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield {"url": url, "port": port, "log": log, "pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def chromium(playwright, media: dict[str, Path], extra_args: list[str] = ()):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        *QUIET_ARGS, *MEDIA_ARGS, f"--use-file-for-fake-video-capture={media['cam']}",
        f"--use-file-for-fake-audio-capture={media['mic']}", *extra_args])


def wait_text(page, selector: str, predicate, timeout_s: float) -> str:
    text = ""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        text = page.inner_text(selector)
        if predicate(text):
            return text
        time.sleep(0.2)
    return text
