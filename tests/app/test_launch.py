"""The launcher's promises: one clear line and exit code 2 for start-up problems."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_help_documents_every_option():
    r = launch("--help")
    assert r.returncode == 0
    for flag in ("--host", "--port", "--share", "--auth", "--ssl-certfile", "--ssl-keyfile", "--model",
                 "--asr-model", "--tts-model", "--tts", "--vlm-device", "--asr-device", "--tts-device",
                 "--config", "--preset", "--local-devices", "--list-devices", "--max-sessions", "replay",
                 "export"):
        assert flag in r.stdout, flag


def test_bad_values_stop_start_up_with_one_line(tmp_path):
    """A typo must not start a half-configured app or print a traceback."""
    _one_line_error(launch("--port", "0"), "app.port")
    _one_line_error(launch("--vlm-device", "gpu"), "engine.device")
    bad = tmp_path / "aura.toml"
    bad.write_text("[app]\nprot = 1\n")
    _one_line_error(launch("--config", str(bad)), "app.prot: unknown setting")
    _one_line_error(launch("--config", str(tmp_path / "missing.yaml")), "no such file")
    _one_line_error(launch("--ssl-certfile", str(tmp_path / "c.pem"), "--ssl-keyfile", str(tmp_path / "k.pem")),
                    "--ssl-certfile: no such file")


def test_occupied_port_is_one_line(tmp_path):
    """Guards the classic second start: the port is taken, say so before loading any model."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _one_line_error(launch("--port", str(port)), f"127.0.0.1:{port} is already in use", "--port")


def test_missing_model_path_is_one_line(tmp_path):
    missing = tmp_path / "no-such-model"
    _one_line_error(launch("--model", str(missing)), str(missing))


def test_no_record_means_no_recorder(tmp_path):
    """`--no-record` reaches the session factory: no recorder is made. Without it each
    session gets a recorder writing into --recordings-dir."""
    import launch as launcher
    from app.clock import ManualClock
    from app.main import recorder_factory

    def config(*argv):
        return launcher.load_config(launcher.app_parser().parse_args(list(argv)))
    base = ["--recordings-dir", str(tmp_path / "rec")]
    assert recorder_factory(config(*base, "--no-record")) is None
    make = recorder_factory(config(*base))
    rec = make("s1", ManualClock(), lambda e: None)
    rec.close()
    assert [p.name.endswith("-s1") for p in (tmp_path / "rec").iterdir()] == [True]


def test_banner_names_the_adapter_in_use():
    """Guards issue 15 item 3: a session run with --adapter must say so on the page (the
    banner), next to the preset's words; without one, nothing is added."""
    from dataclasses import replace
    from app.config import build_config
    from app.main import compose_banner
    base = build_config()
    assert compose_banner("Offline.", base) == "Offline."
    cfg = replace(base, engine=replace(base.engine, adapter="/data/adapters/kettle-fix"))
    text = compose_banner("Offline.", cfg, "No GPU in use.")
    assert text.startswith("Offline. No GPU in use.") and "Adapter in use: kettle-fix" in text
