"""The offline preset's trained model in the browser: the fake camera shows the colour
world's video, a typed "What colour is the background?" gets a caption naming the visible
colour and the reply is voiced (the status line's "first audio"; issue 14 item 4; headless Chromium
against ``launch.py --preset offline``, the harness of tests/ui/test_browser.py)."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.ui.test_browser import (CHROMIUM, MEDIA_ARGS, QUIET_ARGS, _start_stream, _wait_for,  # noqa: F401
                                   _wait_until_no_session, server)

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
def world_browser(tmp_path_factory):
    """Chromium whose camera is a blue world (y4m from model/train/world.py) and whose
    microphone is silence (the default fake mic beeps, which the VAD would take for speech)."""
    if not shutil.which("sox") or not Path(CHROMIUM).exists():
        pytest.skip("needs sox and chromium")
    from playwright.sync_api import sync_playwright
    from model.train.world import World
    d = tmp_path_factory.mktemp("world-media")
    cam = World.scripted([(0.0, "blue")], 8.0).write_video(d / "cam.y4m", 10.0, 240, 320)
    subprocess.run(["sox", "-q", "-n", "-r", "48000", "-c", "1", str(d / "mic.wav"), "trim", "0", "5"], check=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            *QUIET_ARGS, *MEDIA_ARGS, f"--use-file-for-fake-video-capture={cam}",
            f"--use-file-for-fake-audio-capture={d / 'mic.wav'}"])
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
