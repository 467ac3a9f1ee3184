"""The Review tab in a real browser, behind a login: markup in a recording stays text, rows jump
the player, an empty voice track does not break the page, the jump box starts empty, and the
annotation controls add, edit and delete notes."""
from __future__ import annotations

import shutil
import socket
import time
import urllib.error
import urllib.request

import pytest

from app.recording import annotations as notes

from tests.recording.test_review import EVIL_A, EVIL_Q, evil, quiet  # noqa: F401  (fixtures)


AUTH = ("tester", "open-sesame")


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
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                auth=AUTH)
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


def login(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.get_by_label("username").fill(AUTH[0])
    page.get_by_label("password").fill(AUTH[1])
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Open", exact=True).wait_for(timeout=30_000)


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
    login(page, tab["url"])

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
    login(page, tab["url"])
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


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_annotation_controls_in_chromium(tab, chromium, recorded, tmp_path):  # noqa: F811
    """Guards the tester's review loop (issue 15 item 1): a note made at the player's time is
    saved on its chunk, shown in the table and on the timeline as text (not markup), edited
    in place, and deleted; the tab's actions need the login."""
    rec = tab["root"] / recorded.path.name
    evil = "<img src=x onerror=\"window.__pwned=3\">the cup is red"
    page = chromium.new_page(viewport={"width": 1280, "height": 1600})
    login(page, tab["url"])
    open_recording(page, recorded.path.name)
    page.locator("#aura-review-video video").wait_for(timeout=60_000)
    page.wait_for_function("document.querySelector('#aura-review-video video').readyState >= 1",
                           timeout=30_000)
    # the player can still be swapped in by the Open handler's later outputs (which resets
    # its time): seek until the player holds 4.5 s, then ask for its time
    page.wait_for_function("""() => { const v = document.querySelector('#aura-review-video video');
        if (!v || v.readyState < 1) return false;
        if (Math.abs(v.currentTime - 4.5) > 0.001) v.currentTime = 4.5;
        return Math.abs(v.currentTime - 4.5) <= 0.001; }""", timeout=30_000, polling=200)
    page.get_by_role("button", name="Use player time").click()
    at = page.get_by_label("At (s)")
    page.wait_for_function("(el) => el.value === '4.50'", arg=at.element_handle(), timeout=10_000)
    page.get_by_label("Text (what AURA should have said)").fill(evil)
    page.get_by_role("button", name="Save note").click()

    def cell(text: str):
        return page.locator("#aura-review-notes td[data-col='3'] span").filter(has_text=text).first
    cell("should have said: " + evil).wait_for(timeout=20_000)
    assert page.locator(".aura-note").count() == 1
    assert evil in page.locator(".aura-note").get_attribute("title")
    assert page.evaluate("window.__pwned") is None and page.locator("#aura-review-notes img").count() == 0
    [saved] = notes.load(rec)
    assert (saved.n, saved.kind, saved.chunk, saved.text) == (1, "say", 5, evil)

    cell("should have said: " + evil).click()           # edit it
    page.wait_for_function("(el) => el.value === '1'",
                           arg=page.get_by_label("Note # (empty: a new note)").element_handle(), timeout=10_000)
    page.get_by_label("Text (what AURA should have said)").fill("The cup is red.")
    page.get_by_role("button", name="Save note").click()
    cell("should have said: The cup is red.").wait_for(timeout=20_000)

    page.get_by_role("button", name="New note").click()              # a second one
    at.fill("6.8")
    page.get_by_label("should have stayed silent").check()
    page.get_by_role("button", name="Save note").click()
    cell("should have stayed silent").wait_for(timeout=20_000)
    assert [(a.n, a.kind, a.chunk) for a in notes.load(rec)] == [(1, "say", 5), (2, "silent", 6)]
    assert page.locator(".aura-note").count() == 2
    page.screenshot(path=str(tmp_path / "notes.png"), full_page=True)

    cell("should have said: The cup is red.").click()   # delete the first
    page.wait_for_function("(el) => el.value === '1'",
                           arg=page.get_by_label("Note # (empty: a new note)").element_handle(), timeout=10_000)
    page.get_by_role("button", name="Delete note").click()
    page.wait_for_function("(el) => el.value === 'Deleted note #1.'",
                           arg=page.get_by_label("Status").element_handle(), timeout=20_000)
    assert [a.n for a in notes.load(rec)] == [2] and page.locator(".aura-note").count() == 1
    page.close()
    with pytest.raises(urllib.error.HTTPError) as refused:     # no login, no tab data
        urllib.request.urlopen(tab["url"] + "config", timeout=10)
    assert refused.value.code == 401
