"""Start-up: from a validated Config to a running app (browser or local devices).

Contract: ``run_app(config) -> exit code``. Order matters for a good first run: apply the
preset, check what can fail fast (TLS files, a free port) before any model loads, load the
models with progress on stderr, then serve until Ctrl-C. Anything wrong at start-up is
``ValueError``/``LoadError`` -> one line on stderr and exit code 2 (the launcher prints
it). Sessions are recorded under ``app.recordings_dir`` unless ``app.record`` is off.
The browser app serves /healthz, /readyz and /metrics (app/ops.py, app/metrics.py); the
first SIGTERM/Ctrl-C drains (readiness 503, replies finish up to ``app.drain_s``, every
recording closed) and exits 0, a second one hurries.
"""
from __future__ import annotations

import datetime
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from app.config import Config

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def progress(message: str) -> None:
    print(f"[aura] {message}", file=sys.stderr, flush=True)


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            why = "is already in use" if e.errno in (98, 48) else f"cannot be used ({e.strerror})"
            raise ValueError(f"--port: {host}:{port} {why}; pick another with --port") from None


def check_files(config: Config) -> None:
    for flag, value in (("--ssl-certfile", config.app.ssl_certfile), ("--ssl-keyfile", config.app.ssl_keyfile)):
        if value and not Path(value).is_file():
            raise ValueError(f"{flag}: no such file: {value}")


def recorder_factory(config: Config, metrics: Any = None):
    """Make each session's recorder; its errors show in that session's UI (and count in
    the metrics, whose byte counter watches the folder)."""
    if not config.app.record:
        return None
    from app.recording.recorder import Recorder
    root = Path(config.app.recordings_dir)

    def make(session_id: str, clock: Any, view: Any) -> Any:
        app = config.app
        meta = {"session_id": session_id, "model": config.engine.model, "preset": app.preset,
                "adapter": config.engine.adapter or None,
                "asr_model": config.speech.asr_model, "tts": config.speech.tts,
                "seed": config.engine.seed, "temperature": config.engine.temperature,
                "settings": {"hands_free": app.hands_free, "proactive": app.proactive, "voice": app.voice},
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "instance": f"{socket.gethostname()}:{app.port}"}   # which one, behind a proxy
        on_error = view
        if metrics is not None:
            def on_error(event: Any) -> None:
                view(event)
                metrics.count_error(event)
        recorder = Recorder.open(root, session_id, meta, clock, on_error, max_gb=config.app.recordings_max_gb)
        if metrics is not None:
            metrics.watch_recording(recorder.path)
        return recorder
    return make


def compose_banner(banner: str, config: Config, placement_warning: str = "") -> str:
    """The page's banner: the preset's words, the placement warning (not for the offline
    preset, which is meant for the CPU) and the LoRA adapter in use, if any."""
    parts = [banner]
    if placement_warning and config.app.preset != "offline":
        parts.append(placement_warning)
    if config.engine.adapter:
        parts.append(f"Adapter in use: {Path(config.engine.adapter).name} (merged into the weights at load).")
    return " ".join(p for p in parts if p).strip()


def run_app(config: Config) -> int:
    from app.build import LoadError, build_runtime
    from app.presets import apply_preset
    check_files(config)
    if not config.app.local_devices:
        check_port(config.app.host, config.app.port)
    config, banner = apply_preset(config, CACHE, progress)
    try:
        runtime = build_runtime(config, progress)
    except LoadError as e:
        raise ValueError(str(e)) from None
    banner = compose_banner(banner, config, runtime.placement.warning)
    try:
        if config.app.local_devices:
            return _run_local(runtime, runtime.config)
        return _serve(runtime, runtime.config, banner)
    finally:
        runtime.close()


def _manager(runtime: Any, config: Config, metrics: Any = None) -> Any:
    from app.clock import MonotonicClock
    from app.sessions import SessionManager
    manager = SessionManager(runtime, config, MonotonicClock, recorder_factory(config, metrics))
    if metrics is not None:
        manager.taps.append(metrics.tap)
    return manager


def _serve(runtime: Any, config: Config, banner: str) -> int:
    from speech.audio import Reblocker, resample
    from ui.app import build_ui, launch_ui
    from ui.review import build_review_tab
    from ui.webrtc import make_handler
    from app.clock import MonotonicClock
    from app.ops import Ops, Signals
    app = config.app
    signals = Signals()
    signals.install()        # first SIGTERM/Ctrl-C drains, a second hurries
    metrics = None
    if app.metrics:
        from app.metrics import Metrics
        metrics = Metrics()
    manager = _manager(runtime, config, metrics)
    if metrics is not None:
        metrics.watch_sessions(manager)
    ops = Ops(manager, metrics, app.auth, app.metrics_public)
    handler_cls = make_handler(manager, MonotonicClock, Reblocker, resample)
    root = Path(app.recordings_dir)
    review = (lambda: build_review_tab(root)) if app.record or root.is_dir() else None
    demo = build_ui(manager, config, banner, handler_cls, review)
    scheme = "https" if app.ssl_certfile else "http"
    try:
        launch_ui(demo, config, allowed_paths=[str(root.resolve())], routes=ops.routes(), block=False)
        ops.mark_loaded()
        progress(f"open {scheme}://{'localhost' if app.host in ('127.0.0.1', '::1') else app.host}"
                 f":{app.port} in a browser (Ctrl-C stops; health at /healthz, /readyz)")
        while not signals.stop.wait(0.5):   # short waits: the main thread stays free for signals
            pass
        ops.drain(app.drain_s, signals.hurry, progress=progress)
    finally:
        manager.close_all()
        demo.close(verbose=False)
        signals.closed()       # after a second signal: exit here, at once
    return 0


def _run_local(runtime: Any, config: Config) -> int:
    from app.clock import MonotonicClock
    from app.devices.base import DeviceError, parse_device
    from app.devices.camera import OpenCVCamera
    from app.devices.sound import SoundDeviceMicrophone, SoundDeviceSpeaker
    from app.local import run_local
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    manager = _manager(runtime, config)
    clock = MonotonicClock()
    app = config.app
    try:
        camera = OpenCVCamera(parse_device(app.camera), clock)
        mic = SoundDeviceMicrophone(parse_device(app.mic), clock)
        speaker = SoundDeviceSpeaker(parse_device(app.speaker), clock)
        run_local(manager, camera, mic, speaker, clock, stop)
    except DeviceError as e:
        raise ValueError(f"{e} (see python3 launch.py --list-devices)") from None
    return 0
