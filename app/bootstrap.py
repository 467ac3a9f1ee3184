"""First-run set-up: a virtualenv with the pinned requirements, plus the system tools.

Contract: ``ensure_environment(purpose)`` returns only when the running interpreter is the
project's ``.venv`` with ``requirements.txt`` (and for ``purpose="test"`` also
``tests/requirements.txt``) installed and the system programs the purpose needs present.
Otherwise it creates/updates what is missing and re-executes the same command inside the
venv (``os.execv``), or exits with code 2 and one line saying what to do. Idempotent and
quick when nothing changed: a hash of each requirements file is stamped into the venv
once it is installed (so a test set-up also satisfies the app).
Standard library only: it runs before anything is installed.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from ctypes.util import find_library
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path(os.environ.get("AURALIVE_VENV", ROOT / ".venv"))
_REEXEC_MARK = "_AURA_LIVE_IN_VENV"

# Debian package -> how to tell it is present
_SYSTEM = {
    "ffmpeg": lambda: shutil.which("ffmpeg"),          # video decode, torchcodec (Coqui)
    "espeak-ng": lambda: shutil.which("espeak-ng"),    # offline voice, Coqui phonemes
    "libportaudio2": lambda: find_library("portaudio"),  # local microphone / speaker
}
_SYSTEM_TEST = {
    "sox": lambda: shutil.which("sox"),
    "chromium": lambda: shutil.which("chromium"),
    "pulseaudio": lambda: shutil.which("pulseaudio"),
    "pulseaudio-utils": lambda: shutil.which("pactl"),
    "libasound2-plugins": lambda: glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"),
    "nginx": lambda: shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"),  # scale-out test
}


def _say(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


def _die(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _requirement_files(purpose: str) -> list[Path]:
    files = [ROOT / "requirements.txt"]
    if purpose == "test":
        files.append(ROOT / "tests" / "requirements.txt")
    return files


def _stamp(f: Path) -> str:
    return hashlib.sha256(f.read_bytes()).hexdigest()


def _stamp_file(f: Path, venv: Path) -> Path:
    return venv / f".aura-stamp-{'-'.join(f.relative_to(ROOT).parts)}"


def _stale(files: list[Path], venv: Path) -> list[Path]:
    python = venv / "bin" / "python"
    return [f for f in files if not python.exists() or not _stamp_file(f, venv).exists()
            or _stamp_file(f, venv).read_text() != _stamp(f)]


def _choose_venv(purpose: str) -> Path:
    """The active virtualenv if it is already set up for these requirements (e.g. another
    checkout's), else the project's own ``.venv``."""
    active = Path(sys.prefix)
    if active != Path(sys.base_prefix) and not _stale(_requirement_files(purpose), active):
        return active
    return DEFAULT_VENV


def _ensure_system(purpose: str) -> None:
    needed = dict(_SYSTEM)
    if purpose == "test":
        needed.update(_SYSTEM_TEST)
    missing = [pkg for pkg, present in needed.items() if not present()]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-q", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _die(f"missing system packages: {' '.join(missing)}; install them with "
             f"'sudo {' '.join(command)}' (or your system's equivalent) and run again")
    _say(f"installing system packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "update", "-q"], env=env).returncode != 0 \
            or subprocess.run(command, env=env).returncode != 0:
        _die(f"apt-get could not install {' '.join(missing)}")


def _ensure_venv(purpose: str, venv: Path) -> None:
    """Install each requirements file whose content changed since it was last installed."""
    python = venv / "bin" / "python"
    stale = _stale(_requirement_files(purpose), venv)
    if not stale:
        return
    if not python.exists():
        _say(f"creating a virtualenv in {venv}")
        if subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode != 0:
            _die(f"could not create a virtualenv in {venv} (is python3-venv installed?)")
    _say("installing Python packages (the first time takes a few minutes)")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for f in stale:
        if subprocess.run([*pip, "-r", str(f)]).returncode != 0:
            _die(f"pip could not install {f.relative_to(ROOT)}; see the messages above")
        _stamp_file(f, venv).write_text(_stamp(f))


def ensure_environment(purpose: str) -> None:
    """Make the environment ready for ``purpose`` ("app" or "test"), re-exec into the venv."""
    if sys.version_info < (3, 11):
        _die(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if os.environ.get("AURALIVE_SKIP_SETUP") == "1":
        return
    _ensure_system(purpose)
    venv = _choose_venv(purpose)
    _ensure_venv(purpose, venv)
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    python = venv / "bin" / "python"
    if os.environ.get(_REEXEC_MARK) == "1":
        _die(f"re-running inside {venv} did not take effect; run {python} launch.py")
    os.environ[_REEXEC_MARK] = "1"
    os.execv(str(python), [str(python), *sys.argv])
