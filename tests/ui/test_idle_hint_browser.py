"""The Live tab's idle hint in a real browser: it must name the button the page shows."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from app.config import build_config


class NoSessions:
    """A session manager before anyone streams: nothing open, nothing admitted."""
    max_sessions = 1
    count = 0

    def get(self, session_id):
        return None

    def open(self, io):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(page, wanted: str, timeout_s: float = 20.0) -> str:
    end = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < end:
        text = page.inner_text("#aura-status")
        if wanted in text:
            break
        time.sleep(0.25)
    return text


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_idle_hint_names_the_button_on_screen(tmp_path):
    """Guards against the idle hint saying "Press the record button" while the only button on
    the video is "Click to Access Webcam" (issue 13 item 9)."""
    from playwright.sync_api import sync_playwright

    from app.clock import MonotonicClock
    from speech.audio import Reblocker, resample
    from ui.app import build_ui
    from ui.webrtc import make_handler
    demo = build_ui(NoSessions(), build_config(), "", make_handler(NoSessions(), MonotonicClock, Reblocker,
                                                                   resample))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            access = page.get_by_role("button", name="Click to Access Webcam")
            access.wait_for(timeout=30_000)
            hint = _status(page, "Click to Access Webcam")
            page.screenshot(path=str(tmp_path / "idle.png"))
            assert "Press the record button" not in hint
            assert "Click to Access Webcam" in hint, hint
            access.click()
            start = page.get_by_label("start stream")
            start.wait_for(timeout=20_000)
            # the hint's second step is the label the start button now shows
            label = start.inner_text().strip()
            assert label and f"“{label}”" in hint, (label, hint)
            browser.close()
    finally:
        demo.close()
