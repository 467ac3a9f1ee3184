"""The offline preset's trained model in the browser (issue 14 item 4; headless Chromium
against ``launch.py --preset offline``, the harness of tests/ui/test_browser.py):
* the fake camera shows the colour world's video; a typed "What colour is the
  background?" gets a caption naming the visible colour, and the reply is voiced;
* a typed "Tell me when the background turns blue." gets its "noticed" caption within 2 s
  of the camera preview turning blue;
* a typed "Tell me every time the background changes." gets a "noticed" caption within 2 s
  of each change (red to blue, blue to red)."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.ui.harness import CHROMIUM, chromium
from tests.ui.test_browser import _start_stream, _wait_for, _wait_until_no_session, server  # noqa: F401

pytestmark = pytest.mark.browser

# Keeps every RTCPeerConnection the page makes, so the test can read its stats.
TRACK_PEERS_JS = """(() => {
    const Native = window.RTCPeerConnection;
    window.__auraPeers = [];
    window.RTCPeerConnection = function (...args) {
        const pc = new Native(...args);
        window.__auraPeers.push(pc);
        return pc;
    };
    window.RTCPeerConnection.prototype = Native.prototype;
})();"""

# The inbound audio energy summed over the page's peer connections (WebRTC stats).
INBOUND_ENERGY_JS = """async () => {
    let energy = 0;
    for (const pc of window.__auraPeers || []) {
        const stats = await pc.getStats();
        stats.forEach(r => {
            if (r.type === 'inbound-rtp' && r.kind === 'audio') energy += r.totalAudioEnergy || 0;
        });
    }
    return energy;
}"""


@pytest.fixture(scope="module")
def playwright_driver():
    """One Playwright driver for the module's browsers (its sync API allows one at a time)."""
    if not shutil.which("sox") or not Path(CHROMIUM).exists():
        pytest.skip("needs sox and chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


def _world_chromium(p, d: Path, world):
    """Chromium whose camera is ``world`` (y4m from model/train/world.py, looped) and whose
    microphone is silence (the default fake mic beeps, which the VAD would take for speech)."""
    cam = world.write_video(d / "cam.y4m", 10.0, 240, 320)
    subprocess.run(["sox", "-q", "-n", "-r", "48000", "-c", "1", str(d / "mic.wav"), "trim", "0", "5"], check=True)
    return chromium(p, {"cam": cam, "mic": d / "mic.wav"})


@pytest.fixture(scope="module")
def world_browser(playwright_driver, tmp_path_factory):
    """Chromium whose camera shows a blue world."""
    from model.train.world import World
    b = _world_chromium(playwright_driver, tmp_path_factory.mktemp("world-media"),
                        World.scripted([(0.0, "blue")], 8.0))
    yield b
    b.close()


def test_typed_colour_question_gets_the_visible_colour_spoken(server, world_browser, tmp_path):
    """Guards the trained model end to end in the product: a random or frame-blind model
    cannot caption "blue" here, and a reply with no words would not be voiced: the inbound
    audio of the page's RTCPeerConnection must carry energy (its WebRTC stats)."""
    _wait_until_no_session(server)
    page = world_browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(TRACK_PEERS_JS)
    try:
        _start_stream(page, server["url"])
        assert "last step" in _wait_for(page, "#aura-status", lambda t: "last step" in t, 60)
        page.fill("#aura-ask textarea", "What colour is the background?")
        page.keyboard.press("Enter")
        # the whole sentence, not the first words of a reply still streaming ("... is blue …")
        captions = _wait_for(page, "#aura-captions", lambda t: re.search(r"The background is \w+\.", t), 30)
        page.screenshot(path=str(tmp_path / "trained.png"), full_page=True)
        assert "The background is blue." in captions, captions[-400:]
        status = _wait_for(page, "#aura-status", lambda t: re.search(r"first audio \d+ ms", t), 90)
        assert re.search(r"first audio \d+ ms", status), status
        end, energy = time.monotonic() + 30, 0.0
        while energy <= 0 and time.monotonic() < end:
            energy = page.evaluate(INBOUND_ENERGY_JS)
            time.sleep(0.5)
        assert energy > 0, "the reply's voice did not reach the browser (inbound audio energy 0)"
    finally:
        page.close()


# Logs (page time, colour) whenever the centre of the camera preview changes colour, and
# (page time, text) whenever the captions change: what the person sees, on one clock.
WATCH_PREVIEW_AND_CAPTIONS_JS = """() => {
    const log = window.__auraLog = {colour: [], captions: []};
    const v = document.querySelector('#aura-webrtc video');
    const c = document.createElement('canvas');
    c.width = c.height = 8;
    const g = c.getContext('2d', {willReadFrequently: true});
    let last = null;
    setInterval(() => {
        if (!v || !v.videoWidth) return;
        g.drawImage(v, 0, 0, 8, 8);
        const [r, , b] = g.getImageData(4, 4, 1, 1).data;
        const name = b > 150 && r < 100 ? 'blue' : r > 150 && b < 100 ? 'red' : 'other';
        if (name !== last) { log.colour.push([performance.now(), name]); last = name; }
    }, 40);
    const cap = document.querySelector('#aura-captions');
    new MutationObserver(() => log.captions.push([performance.now(), cap.innerText]))
        .observe(cap, {subtree: true, childList: true, characterData: true});
}"""


EARLY_MS = 300     # under a frame interval at 2 fps (500 ms): an alert at a red frame is caught


@pytest.fixture(scope="module")
def red_then_blue_browser(playwright_driver, tmp_path_factory):
    """Chromium whose camera loops a world that is red for 10 s, then blue for 4 s."""
    from model.train.world import World
    b = _world_chromium(playwright_driver, tmp_path_factory.mktemp("alert-media"),
                        World.scripted([(0.0, "red"), (10.0, "blue")], 14.0))
    yield b
    b.close()


def _ask_when_red_starts(server, browser, question: str, until: str, shot: Path):
    """Open the app (the red-then-blue camera), watch its preview and captions, type
    ``question`` at the start of a red stretch (10 s before the change to blue), wait for a
    caption holding ``until`` and save a screenshot; checks the acknowledgement. Returns
    (captions, the page's log, the page time it was asked at, the first blue after it)."""
    _wait_until_no_session(server)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _start_stream(page, server["url"])
        assert "last step" in _wait_for(page, "#aura-status", lambda t: "last step" in t, 60)
        page.evaluate(WATCH_PREVIEW_AND_CAPTIONS_JS)
        colour = "() => (window.__auraLog.colour.at(-1) || [0, null])[1]"
        for want in ("blue", "red"):
            end = time.monotonic() + 30
            while page.evaluate(colour) != want and time.monotonic() < end:
                time.sleep(0.05)
            assert page.evaluate(colour) == want, page.evaluate("() => window.__auraLog.colour")
        asked = page.evaluate("() => performance.now()")
        page.fill("#aura-ask textarea", question)
        page.keyboard.press("Enter")
        captions = _wait_for(page, "#aura-captions", lambda t: until in t, 40)
        page.screenshot(path=str(shot), full_page=True)
        log = page.evaluate("() => window.__auraLog")
    finally:
        page.close()
    assert "OK, I will let you know then." in captions, captions[-400:]
    assert until in captions, captions[-400:]
    blue = min(t for t, c in log["colour"] if c == "blue" and t > asked)
    assert not any("turned" in text for t, text in log["captions"] if asked < t < blue - EARLY_MS)
    return captions, log, asked, blue


def _noticed_within_2_s(log, asked: float, colour: str, change: float) -> None:
    """The first "turned <colour>" caption after ``asked`` comes within 2 s of ``change``.
    Measured -18 to 296 ms in six runs (2026-12-06); the preview is drawn a little after the
    frame is sent, so a caption can come a few ms "before" it: hence -EARLY_MS."""
    said = min(t for t, text in log["captions"] if f"turned {colour}" in text and t > asked)
    assert -EARLY_MS < said - change <= 2000, (colour, said - change, log["colour"])


def test_a_when_request_is_noticed_within_2_s_of_the_change(server, red_then_blue_browser, tmp_path):
    """Guards proactive speech in the product: asked at the start of the red stretch, the
    assistant acknowledges, stays quiet while the preview is red, and its "turned blue"
    caption appears within 2 s of the preview turning blue (both times read in the page)."""
    _, log, asked, blue = _ask_when_red_starts(server, red_then_blue_browser, "Tell me when the background turns blue.",
                                               "turned blue", tmp_path / "noticed.png")
    _noticed_within_2_s(log, asked, "blue", blue)


def test_every_change_is_noticed_within_2_s_of_each_change(server, red_then_blue_browser, tmp_path):
    """Asked "Tell me every time the background changes." at the start of a red stretch, the
    assistant says nothing while it stays red, then its "turned blue" caption comes within 2 s
    of the preview turning blue and its "turned red" caption within 2 s of it turning red
    again (the camera's loop)."""
    captions, log, asked, blue = _ask_when_red_starts(server, red_then_blue_browser,
                                                      "Tell me every time the background changes.",
                                                      "turned red", tmp_path / "every.png")
    _noticed_within_2_s(log, asked, "blue", blue)
    _noticed_within_2_s(log, asked, "red", min(t for t, c in log["colour"] if c == "red" and t > blue))
    assert captions.count("turned blue") == 1, captions[-400:]
