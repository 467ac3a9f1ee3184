#!/usr/bin/env python3
"""AURA Live launcher: the only place that reads argv, the environment and config files.

    python3 launch.py [options]            the browser app (see --help)
    python3 launch.py replay VIDEO ...     run the engine over a video file, JSON lines out
    python3 launch.py test [pytest args]   set up and run the test suite

The first run of any command creates ``.venv`` and installs what is missing
(app/bootstrap.py); later runs start at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

SUBCOMMANDS = ("replay", "test")


# --- options shared by every command that builds a Config -------------------------------
# (flag, config section, config field, argparse kwargs)
CONFIG_FLAGS: list[tuple[str, str, str, dict]] = [
    ("--model", "engine", "model", dict(metavar="ID_OR_DIR", help="AURA weights: HF id or local dir (default aurateam/AURA)")),
    ("--vlm-device", "engine", "device", dict(metavar="DEV", help="auto | cpu | cuda | cuda:N")),
    ("--dtype", "engine", "dtype", dict(help="auto | float32 | bfloat16 | float16")),
    ("--backend", "engine", "backend", dict(help="auto | reference | fast")),
    ("--language", "engine", "language", dict(help='reply language, e.g. "English" (appended to the system prompt)')),
    ("--temperature", "engine", "temperature", dict(type=float, help="0 = greedy (default)")),
    ("--seed", "engine", "seed", dict(type=int)),
    ("--preset", "app", "preset", dict(choices=["offline"], help="offline: tiny random models built locally (answers are meaningless)")),
]


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file with engine/speech/app sections")
    for flag, _section, _name, kwargs in CONFIG_FLAGS:
        parser.add_argument(flag, default=None, **kwargs)


def load_config(args: argparse.Namespace):
    """Defaults < --config file < AURA_* environment < command-line flags."""
    from app.config import build_config, env_layer, parse_config_text
    layers = []
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"--config: no such file: {path}")
        layers.append(parse_config_text(path.read_text(encoding="utf-8"), path.suffix.lower()))
    layers.append(env_layer(os.environ))
    cli: dict[str, dict] = {}
    for flag, section, name, _kwargs in CONFIG_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            cli.setdefault(section, {})[name] = value
    layers.append(cli)
    return build_config(*layers)


# --- replay ---------------------------------------------------------------------------
def cmd_replay(argv: list[str]) -> int:
    """Run the engine over a video file; JSON lines out (app/replay.py)."""
    parser = argparse.ArgumentParser(prog="launch.py replay", description=cmd_replay.__doc__)
    parser.add_argument("video", help="video file (anything OpenCV reads: mp4, y4m, ...)")
    parser.add_argument("--ask", action="append", default=[], metavar="SECONDS:TEXT",
                        help="a typed question at that stream time (repeatable)")
    parser.add_argument("--out", metavar="FILE.jsonl", help="write here instead of stdout")
    parser.add_argument("--dump-context", action="store_true", help="add the context token ids to each step")
    parser.add_argument("--realtime", action="store_true", help="pace the video in real time")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from app.replay import main as replay
    return replay(cfg, args.video, args.ask, args.out, args.dump_context, args.realtime,
                  cache_dir=ROOT / ".cache")


# --- test -----------------------------------------------------------------------------
def cmd_test(argv: list[str]) -> int:
    """Run the whole suite except GPU tests (unless a GPU is present); extra args go to pytest."""
    import pytest
    args = ["-q", "--run-all", str(ROOT / "tests"), *argv]
    return int(pytest.main(args))


def main(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    from app.bootstrap import ensure_environment
    ensure_environment("test" if command == "test" else "app")
    if command == "test":
        return cmd_test(argv[1:])
    if command == "replay":
        return cmd_replay(argv[1:])
    print("error: the app is not available yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
