"""Places and the waiting line as visitors see them (``--max-sessions 2``, four visitors),
and where the media of this default ``--host 127.0.0.1`` server flows.

Guards issue 13 item 2: a closed tab kept its place for ~27 s (until WebRTC's consent
checks failed), FastRTC's own connection limit refused visitors after the app's session had
ended, and a refused visitor got a red "Too many concurrent connections" toast and never
joined. Now a closed tab frees its place within 5 s, a visitor who finds every place taken
sees their place in line, and joins by themselves, in arrival order, without a reload.
Guards item 7: with ``--host 127.0.0.1`` the media sockets were bound to the LAN addresses.
"""
from __future__ import annotations

import ipaddress
import re
import time

import pytest

from tests.ui.harness import chromium, make_media, serving, wait_text, webcam_button

pytestmark = pytest.mark.browser
TOAST = "Too many concurrent connections"
SILENT_LIMIT_S = 10.0    # ui/presence.py TIMEOUT_S of silence, plus slack for a loaded machine


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return make_media(tmp_path_factory.mktemp("queue-media"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("queue-server")
    with serving(["--max-sessions", "2", "--no-record"], tmp) as s:
        yield s


@pytest.fixture(scope="module")
def browser(media):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = chromium(p, media)
        yield b
        b.close()


def _start(page, url: str) -> None:
    page.goto(url, wait_until="load")
    webcam_button(page).click(timeout=30_000)
    page.get_by_label("start stream").click(timeout=20_000)


# The waiting message's text and background colours, as the page renders them.
WAITING_STYLE_JS = """() => {
    const s = getComputedStyle(document.querySelector('#aura-captions .aura-waiting'));
    return [s.color, s.backgroundColor];
}"""


def _reddish(css_rgb: str) -> bool:
    """An error-like colour: red well above green and blue ("rgb(170, 51, 51)")."""
    r, g, b = (float(v) for v in css_rgb[css_rgb.index("(") + 1:].rstrip(")").split(",")[:3])
    return r > 120 and r > 1.6 * max(g, b)


def _live(page, timeout_s: float = 60) -> bool:
    return "last step" in wait_text(page, "#aura-status", lambda t: "last step" in t, timeout_s)


def _in_line(page, place: int, timeout_s: float = 30) -> str:
    want = f"number {place} in line"
    return wait_text(page, "#aura-captions", lambda t: want in t, timeout_s)


def _admitted_after(page, t0: float, timeout_s: float = 30) -> float:
    """Seconds from t0 until the page stops showing a place in line."""
    wait_text(page, "#aura-captions", lambda t: "in line" not in t, timeout_s)
    return time.monotonic() - t0


def test_three_visitors_two_places_then_a_closed_tab(server, browser, tmp_path):
    """Two visitors hold both places; the third and fourth are told their place in line (no
    toast); closing a live tab lets the first in line in within 5 s with no reload, and the
    fourth moves up; closing the other lets the fourth in."""
    a, b, c, d = (browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(4))
    try:
        _start(a, server["url"])
        assert _live(a), "the first visitor's session did not start"
        _start(b, server["url"])
        assert _live(b), "the second visitor's session did not start"
        _start(c, server["url"])
        assert "number 1 in line" in _in_line(c, 1), c.inner_text("body")[:600]
        _start(d, server["url"])
        if "number 2 in line" not in _in_line(d, 2):
            d.screenshot(path=str(tmp_path / "fourth.png"), full_page=True)
            pytest.fail(f"the fourth visitor was not told their place: {d.inner_text('body')[:600]}")
        c.screenshot(path=str(tmp_path / "waiting.png"), full_page=True)
        colour, background = c.evaluate(WAITING_STYLE_JS)
        assert not _reddish(colour) and not _reddish(background), (colour, background)
        for page in (c, d):
            assert TOAST not in page.inner_text("body")
            assert page.locator(".toast-body").count() == 0, "a toast was shown to a waiting visitor"
            assert page.inner_text("#aura-captions").count("AURA Live is busy") == 1

        t0 = time.monotonic()
        a.close()
        joined_s = _admitted_after(c, t0)
        print(f"\nplace freed by a closed tab -> next in line admitted after {joined_s:.2f} s")
        assert joined_s <= 5.0, f"the closed tab's place reopened after {joined_s:.1f} s"
        assert "number 1 in line" in _in_line(d, 1, 10), "the fourth visitor did not move up"
        assert _live(c), "the admitted visitor's session did not run"
        assert _live(b, 5), "the other live session was disturbed"

        # a page that vanishes without hanging up (as a crash or a lost network would: here
        # its hang-up on pagehide is disabled) is noticed by its microphone's silence
        t0 = time.monotonic()
        b.evaluate("RTCPeerConnection.prototype.close = function () {}")
        b.close()
        joined_s = _admitted_after(d, t0)
        print(f"place freed by a tab that did not hang up -> fourth visitor admitted after {joined_s:.2f} s")
        assert joined_s <= SILENT_LIMIT_S, f"the silent tab's place reopened after {joined_s:.1f} s"
        assert _live(d), "the fourth visitor's session did not run"
        for page in (c, d):
            assert TOAST not in page.inner_text("body")
    finally:
        for page in (a, b, c, d):
            if not page.is_closed():
                page.close()


# Keeps every RTCPeerConnection the page creates in window.__auraPcs (the test's own hook).
KEEP_PCS_JS = """(() => {
    const Native = window.RTCPeerConnection; window.__auraPcs = [];
    window.RTCPeerConnection = function (c) { const pc = new Native(c); window.__auraPcs.push(pc); return pc; };
    window.RTCPeerConnection.prototype = Native.prototype;
})()"""
# The addresses of the candidate pair that carries the media: [local, remote].
SELECTED_PAIR_JS = """async () => {
    for (const pc of window.__auraPcs) {
        const stats = await pc.getStats(); let pair = null;
        stats.forEach(r => { if (r.type === 'candidate-pair' && r.state === 'succeeded' && r.nominated)
            pair = [stats.get(r.localCandidateId).address, stats.get(r.remoteCandidateId).address]; });
        if (pair) return pair;
    }
    return null;
}"""


def _server_udp_addresses(pid: int) -> set[str]:
    import psutil
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="udp")}


def test_media_stays_on_loopback_with_the_default_host(server, browser, tmp_path):
    """A local browser connects; the server advertises only loopback ICE candidates, the
    media flows over loopback, and the server process has no UDP socket elsewhere."""
    page = browser.new_page()
    try:
        page.add_init_script(KEEP_PCS_JS)
        _start(page, server["url"])
        assert _live(page), "a local browser could not stream to a loopback-only server"
        sdp = page.evaluate("window.__auraPcs.map(pc => pc.remoteDescription ? pc.remoteDescription.sdp : '').join('')")
        advertised = re.findall(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", sdp)
        pair = page.evaluate(SELECTED_PAIR_JS)
        udp = _server_udp_addresses(server["pid"])
        print(f"\nserver candidates {sorted(set(advertised))}; media pair {pair}; server UDP sockets on {sorted(udp)}")
        assert advertised and set(advertised) <= {"127.0.0.1", "::1"}, advertised
        assert pair is not None and ipaddress.ip_address(pair[1]).is_loopback, pair
        assert udp and all(ipaddress.ip_address(a).is_loopback for a in udp), udp
    finally:
        page.close()
