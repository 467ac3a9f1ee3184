"""The Review tab in a real browser: markup in a recording stays text, rows jump the player."""
from __future__ import annotations

import shutil
import socket

import pytest

from tests.recording.test_review import EVIL_A, EVIL_Q, evil  # noqa: F401  (fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_review_tab_in_chromium(evil, recorded, tmp_path):  # noqa: F811
    """Guards against XSS through recorded text and a jump that does not move the video."""
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from ui.review import build_review_tab
    root = tmp_path / "root"
    shutil.copytree(evil.root, root)
    shutil.copytree(recorded.path, root / recorded.path.name)
    with gr.Blocks() as demo:
        with gr.Tab("Review"):
            build_review_tab(root)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")

            def open_recording(rid: str) -> None:
                page.get_by_label("Recording", exact=True).click()
                page.get_by_role("option", name=rid).click()
                page.get_by_role("button", name="Open").click()

            open_recording(evil.path.name)
            page.get_by_text(EVIL_A).first.wait_for(timeout=60_000)
            assert page.evaluate("window.__pwned") is None and dialogs == []
            assert page.locator("#aura-review-video img[src=x]").count() == 0
            assert page.get_by_text(EVIL_Q).count() >= 1  # shown, as text

            open_recording(recorded.path.name)
            cell = page.locator("#aura-review-events td[data-col='0'] span").filter(
                has_text="3.35").first
            cell.wait_for(timeout=60_000)
            page.locator("#aura-review-video video").wait_for(timeout=60_000)
            page.wait_for_function(
                "document.querySelector('#aura-review-video video').readyState >= 1", timeout=30_000)
            cell.click()
            page.wait_for_function(
                "Math.abs(document.querySelector('#aura-review-video video').currentTime - 3.35) < 0.05",
                timeout=15_000)
            browser.close()
    finally:
        demo.close()
