"""The app as a person uses it: headless Chromium with a fake webcam and microphone against
``launch.py --preset offline`` started exactly as the README says (a subprocess).

Chromium feeds a y4m test pattern as the camera and a wav with a spoken question (espeak-ng)
as the microphone; the page must show the transcript and a reply, the browser must receive
the reply's audio, the session must be recorded, a second person must be told the app is
busy, model text must stay text, a plain-HTTP LAN address or a denied permission must
explain why the camera is blocked, and the presenter view and the offline banner must show.
Screenshots land in the test's tmp folder.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ui.harness import make_media, wait_text, webcam_button

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

AUTH = "tester:open-sesame"
MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--autoplay-policy=no-user-gesture-required"]
QUIET_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

# Keeps the loudest sample of the audio the server sends back in window.__auraPeak.
WATCH_REMOTE_AUDIO_JS = """() => {
    window.__auraPeak = 0;
    const tick = () => {
        const v = document.querySelector('#aura-webrtc video');
        const s = v && v.srcObject;
        if (!s || !s.getAudioTracks().length) { setTimeout(tick, 200); return; }
        const ctx = new AudioContext(); const an = ctx.createAnalyser(); an.fftSize = 2048;
        ctx.createMediaStreamSource(s).connect(an);
        const buf = new Float32Array(2048);
        setInterval(() => { an.getFloatTimeDomainData(buf);
            for (const x of buf) window.__auraPeak = Math.max(window.__auraPeak, Math.abs(x)); }, 20);
    };
    tick();
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media(tmp_path_factory.mktemp("browser-media"))


def launch_app(args: list[str], log: Path) -> tuple[subprocess.Popen, str, int]:
    """``python3 launch.py --preset offline ARGS`` on a free port, console into ``log``;
    returns once it serves (the process, its URL, its port)."""
    port = _free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "launch.py", "--preset", "offline", "--port", str(port), *args],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 420          # the first run builds the tiny models
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
    return proc, url, port


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python3 launch.py --preset offline`` on a free port, one session, with a login."""
    rec = tmp_path_factory.mktemp("recordings")
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, url, port = launch_app(["--max-sessions", "1", "--recordings-dir", str(rec), "--auth", AUTH], log)
    yield {"url": url, "port": port, "recordings": rec, "log": log}
    stop_app(proc)


def _wait_until_no_session(server, timeout_s: float = 90.0) -> None:
    """A closed page's WebRTC connection ends (and its session with it) only when the
    server notices; each test starts once no session is live (seen in the recordings)."""
    from app.recording.library import is_live
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not any(is_live(p.parent) for p in server["recordings"].glob("*/events.jsonl")):
            return
        time.sleep(1)
    pytest.fail("a session from an earlier test is still live")


@pytest.fixture(autouse=True)
def _fresh(server):
    _wait_until_no_session(server)


@pytest.fixture(scope="module")
def browser(media):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            *QUIET_ARGS, *MEDIA_ARGS, f"--use-file-for-fake-video-capture={media['cam']}",
            f"--use-file-for-fake-audio-capture={media['mic']}",
            "--host-resolver-rules=MAP aura-lan.test 127.0.0.1"])
        yield b
        b.close()


def _open(page, url: str) -> None:
    """Load the app, logging in on Gradio's login page."""
    page.goto(url, wait_until="load")
    user, password = AUTH.split(":")
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.keyboard.press("Enter")
    webcam_button(page).wait_for(timeout=30_000)


def _start_stream(page, url: str) -> None:
    _open(page, url)
    webcam_button(page).click()
    page.get_by_label("start stream").click(timeout=20_000)


_wait_for = wait_text


def test_spoken_question_in_the_browser(server, browser, tmp_path):
    """Guards the whole browser path: webcam + mic over WebRTC to the session, the transcript
    and the reply as captions, the reply's voice back to the browser, and the recording."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _start_stream(page, server["url"])
        page.evaluate(WATCH_REMOTE_AUDIO_JS)
        captions = _wait_for(page, "#aura-captions", lambda t: "You:" in t and "AURA:" in t, 90)
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        assert "You:" in captions and "AURA:" in captions, f"captions: {captions[:300]}"
        # (a random reply may hold nothing speakable; the mic file loops, so wait for a voiced one)
        status = _wait_for(page, "#aura-status", lambda t: re.search(r"first audio \d+ ms", t), 90)
        assert "last step" in status and "first token" in status, status
        end = time.monotonic() + 30
        while page.evaluate("window.__auraPeak") <= 0.01 and time.monotonic() < end:
            time.sleep(0.5)
        assert page.evaluate("window.__auraPeak") > 0.01, "no reply audio reached the browser"
    finally:
        page.close()
    # closing the page ends the session; its recording holds the conversation and the video
    from app.recording.library import list_recordings, read_events
    _wait_until_no_session(server)
    recs = list_recordings(server["recordings"])
    assert recs, "no recording was made"
    rec_dir = server["recordings"] / recs[0].id
    types = {e["type"] for e in read_events(rec_dir / "events.jsonl")}
    assert {"user", "reply", "chunk", "step", "latency"} <= types, types
    assert (rec_dir / "video.mp4").stat().st_size > 0


def test_second_person_is_told_the_app_is_busy(server, browser, tmp_path):
    """With --max-sessions 1 a second visitor must get a clear message, not someone else's
    session and not a blank page."""
    first = browser.new_page()
    second = browser.new_page()
    try:
        _start_stream(first, server["url"])
        assert "last step" in _wait_for(first, "#aura-status", lambda t: "last step" in t, 60)
        _open(second, server["url"])
        webcam_button(second).click()
        second.get_by_label("start stream").click(timeout=20_000)
        busy = _wait_for(second, "body", lambda t: "AURA Live is busy" in t or "Too many" in t, 30)
        second.screenshot(path=str(tmp_path / "busy.png"), full_page=True)
        assert "AURA Live is busy" in busy or "Too many concurrent connections" in busy
        assert "You:" not in second.inner_text("#aura-captions")
    finally:
        first.close()
        second.close()


def test_model_text_is_never_html(server, browser):
    """A typed question with markup must show as text (no element injected into the page)."""
    page = browser.new_page()
    try:
        _start_stream(page, server["url"])
        assert "last step" in _wait_for(page, "#aura-status", lambda t: "last step" in t, 60)
        payload = '<img src=x id=pwned onerror="window.__pwned=1">'
        page.fill("#aura-ask textarea", payload)
        page.keyboard.press("Enter")
        text = _wait_for(page, "#aura-captions", lambda t: "img src=x" in t, 30)
        assert "<img src=x" in text
        assert page.locator("#pwned").count() == 0 and not page.evaluate("window.__pwned === 1")
    finally:
        page.close()


def test_plain_http_on_a_lan_address_explains_the_blocked_camera(server, browser, tmp_path):
    """Browsers block camera/mic on http:// except localhost: the page must say why and how
    to fix it instead of silently failing."""
    page = browser.new_page()
    try:
        page.goto(f"http://aura-lan.test:{server['port']}/", wait_until="load")
        user, password = AUTH.split(":")
        page.get_by_label("username").fill(user)
        page.get_by_label("password").fill(password)
        page.keyboard.press("Enter")
        banner = _wait_for(page, "body", lambda t: "Camera and microphone are blocked" in t, 20)
        page.screenshot(path=str(tmp_path / "insecure.png"), full_page=True)
        assert "Camera and microphone are blocked" in banner and "--ssl-certfile" in banner
    finally:
        page.close()


def test_nothing_is_served_without_the_login(server):
    """--auth must cover the app, its API and the recordings (the Review tab's files)."""
    import urllib.error
    rec_files = [p for p in server["recordings"].rglob("*") if p.is_file()]
    targets = [f"{server['url']}config", f"{server['url']}gradio_api/info"]
    targets += [f"{server['url']}gradio_api/file={p}" for p in rec_files[:2]]
    for url in targets:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read(2000).decode(errors="replace")
                assert r.status in (401, 403) or "login" in body.lower(), (url, r.status, body[:200])
        except urllib.error.HTTPError as e:
            assert e.code in (401, 403, 404), (url, e.code)


def test_presenter_view_mirror_and_the_offline_banner(server, browser, tmp_path):
    """The offline preset says on the page what its trained tiny model knows; the presenter
    view switches the captions to the large layout (and back); "Mirror my video" flips the
    preview."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        _start_stream(page, server["url"])
        assert "trained here on coloured backgrounds" in page.inner_text(".aura-banner")
        assert "last step" in _wait_for(page, "#aura-status", lambda t: "last step" in t, 60)
        assert page.locator("#aura-captions .aura-presenter").count() == 0
        page.get_by_label("Presenter view (large captions)").check()
        page.locator("#aura-captions .aura-presenter").wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "presenter.png"), full_page=True)
        page.get_by_label("Presenter view (large captions)").uncheck()
        page.locator("#aura-captions .aura-presenter").wait_for(state="detached", timeout=10_000)
        # the preview is mirrored by default; unticking shows it as the camera sees it
        transform = "() => getComputedStyle(document.querySelector('#aura-webrtc video')).transform"
        assert page.evaluate(transform).startswith("matrix(-1")
        page.get_by_label("Mirror my video (preview only)").uncheck()
        page.wait_for_function(f"({transform})() === 'none'", timeout=5_000)
        page.get_by_label("Mirror my video (preview only)").check()
        page.wait_for_function(f"({transform})().startsWith('matrix(-1')", timeout=5_000)
    finally:
        page.close()


def test_denied_camera_permission_is_explained(server, browser, tmp_path):
    """A person who blocks the camera/microphone prompt gets told how to allow it, instead
    of a stream that never starts (this second Chromium denies every prompt)."""
    denying = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=[
        *QUIET_ARGS, "--use-fake-device-for-media-stream", "--deny-permission-prompts"])
    try:
        page = denying.new_page()
        _open(page, server["url"])
        webcam_button(page).click()
        banner = page.locator("#aura-access-banner")
        banner.wait_for(timeout=20_000)
        page.screenshot(path=str(tmp_path / "denied.png"), full_page=True)
        assert "is denied for this site" in banner.inner_text()
        assert "site settings" in banner.inner_text()
    finally:
        denying.close()
