"""The app on a phone: HTTPS with a self-signed certificate, ``--host 0.0.0.0`` reached
over loopback, Chromium's Pixel 7 emulation (412x839 viewport, touch, mobile user agent).

Guards issue 13 item 10 (phones had never been tried): the page must load, the stream
start by touch, the video, captions and main controls fit the width with no horizontal
scrolling, and a typed question be answered. The screenshot lands in the test's tmp folder.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.ui.harness import chromium, make_media, serving, wait_text, webcam_button

pytestmark = pytest.mark.browser
DEVICE = "Pixel 7"
QUESTION = "What colour is the square?"
MAIN = {"video": "#aura-webrtc", "captions": "#aura-captions", "question": "#aura-ask",
        "ask": "#aura-send", "talk": "#aura-talk", "reset": "#aura-reset"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mobile-server")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp / "key.pem"),
                    "-out", str(tmp / "cert.pem"), "-days", "2", "-subj", "/CN=aura-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with serving(["--host", "0.0.0.0", "--ssl-certfile", str(tmp / "cert.pem"), "--ssl-keyfile",
                  str(tmp / "key.pem"), "--max-sessions", "1", "--no-record"], tmp, scheme="https") as s:
        yield s


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    from playwright.sync_api import sync_playwright
    media = make_media(tmp_path_factory.mktemp("mobile-media"))
    with sync_playwright() as p:
        browser = chromium(p, media)
        context = browser.new_context(**p.devices[DEVICE], ignore_https_errors=True)
        yield context.new_page()
        context.close()
        browser.close()


def _overflow(page) -> dict:
    """What sticks out to the right of the viewport (page width, and each main element)."""
    return page.evaluate("""(sel) => {
        const w = document.documentElement.clientWidth, out = {};
        if (document.documentElement.scrollWidth > w + 1) out.page = document.documentElement.scrollWidth - w;
        for (const [name, s] of Object.entries(sel)) {
            const el = document.querySelector(s);
            if (!el) { out[name] = 'missing'; continue; }
            const r = el.getBoundingClientRect();
            if (r.left < -1 || r.right > w + 1 || r.width < 40) out[name] = [Math.round(r.left), Math.round(r.right)];
        }
        return out;
    }""", MAIN)


def test_phone_over_https_streams_fits_and_answers(server, phone, tmp_path):
    page = phone
    page.goto(server["url"], wait_until="load")
    webcam_button(page).tap(timeout=30_000)
    page.get_by_label("start stream").tap(timeout=20_000)
    status = wait_text(page, "#aura-status", lambda t: "last step" in t, 90)
    assert "last step" in status, f"the stream did not start on the phone: {status[:200]}"
    assert page.evaluate("window.isSecureContext"), "HTTPS page is not a secure context"

    page.locator("#aura-ask textarea").tap()
    page.locator("#aura-ask textarea").fill(QUESTION)
    page.locator("#aura-send").tap()
    answered = wait_text(page, "#aura-captions",
                         lambda t: QUESTION in t and "AURA:" in t.split(QUESTION, 1)[1], 60)
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.screenshot(path=str(tmp_path / "phone-full.png"), full_page=True)
    assert QUESTION in answered and "AURA:" in answered.split(QUESTION, 1)[1], answered[-400:]
    assert _overflow(page) == {}, f"sticks out of the {DEVICE} viewport: {_overflow(page)}"
    # what a phone user trips over: a page zoomed in on focus, a cramped question box, a
    # video that leaves screen width unused
    sizes = page.evaluate("""() => ({
        font: parseFloat(getComputedStyle(document.querySelector('#aura-ask textarea')).fontSize),
        box: document.querySelector('#aura-ask textarea').getBoundingClientRect().width,
        video: document.querySelector('#aura-webrtc').getBoundingClientRect().width,
        screen: document.documentElement.clientWidth})""")
    print(f"\n{DEVICE}: {sizes}")
    assert sizes["font"] >= 16, "phones zoom the page into a text box whose font is under 16px"
    assert sizes["box"] >= 0.6 * sizes["screen"], f"the question box is cramped: {sizes}"
    assert sizes["video"] >= 0.9 * sizes["screen"], f"the video leaves the screen's width unused: {sizes}"
