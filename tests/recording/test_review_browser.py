"""The Review tab in a real browser: markup in a recording stays text, rows jump the player,
an empty voice track does not break the page, the jump box starts empty."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from tests.recording.test_review import EVIL_A, EVIL_Q, evil, quiet  # noqa: F401  (fixtures)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tab(evil, quiet, recorded, tmp_path_factory):  # noqa: F811
    """The Review tab alone in a Blocks, over a root holding the three test recordings."""
    import gradio as gr

    from ui.review import build_review_tab
    root = tmp_path_factory.mktemp("review-browser") / "root"
    for rec in (evil, quiet, recorded):
        shutil.copytree(rec.path, root / rec.path.name)
    with gr.Blocks() as demo:
        with gr.Tab("Review"):
            build_review_tab(root)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield {"url": f"http://127.0.0.1:{port}/", "root": root}
    demo.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def open_recording(page, rid: str) -> None:
    page.get_by_label("Recording", exact=True).click()
    page.get_by_role("option", name=rid).click()
    page.get_by_role("button", name="Open", exact=True).click()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_review_tab_in_chromium(tab, chromium, evil, recorded):  # noqa: F811
    """Guards against XSS through recorded text and a jump that does not move the video."""
    page = chromium.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(tab["url"], wait_until="load")

    open_recording(page, evil.path.name)
    page.get_by_text(EVIL_A).first.wait_for(timeout=60_000)
    assert page.evaluate("window.__pwned") is None and dialogs == []
    assert page.locator("#aura-review-video img[src=x]").count() == 0
    assert page.get_by_text(EVIL_Q).count() >= 1  # shown, as text

    open_recording(page, recorded.path.name)
    cell = page.locator("#aura-review-events td[data-col='0'] span").filter(has_text="3.35").first
    cell.wait_for(timeout=60_000)
    page.locator("#aura-review-video video").wait_for(timeout=60_000)
    page.wait_for_function(
        "document.querySelector('#aura-review-video video').readyState >= 1", timeout=30_000)
    cell.click()
    page.wait_for_function(
        "Math.abs(document.querySelector('#aura-review-video video').currentTime - 3.35) < 0.05",
        timeout=15_000)
    assert page.get_by_label("Jump to (s)").input_value() == "3.35"
    page.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_review_tab_with_silent_recording(tab, chromium, quiet, tmp_path):  # noqa: F811
    """Guards against issue 13 item 9: "Unable to decode audio data" thrown for a recording
    whose voice tracks are empty, and "Jump to (s)" showing 0 before anything is chosen."""
    page = chromium.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(tab["url"], wait_until="load")
    jump = page.get_by_label("Jump to (s)")
    jump.wait_for(timeout=30_000)
    assert jump.input_value() == ""

    open_recording(page, quiet.path.name)
    page.locator("#aura-review-video video").wait_for(timeout=60_000)
    page.get_by_text("Separate audio tracks").click()
    page.get_by_text("AURA's voice (nothing recorded)").wait_for(timeout=15_000)
    time.sleep(2)  # the players decode what they are given right away
    page.screenshot(path=str(tmp_path / "quiet.png"), full_page=True)
    assert not [e for e in errors if "decode audio" in e], errors
    assert jump.input_value() == ""
    page.close()
