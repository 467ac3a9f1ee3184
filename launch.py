#!/usr/bin/env python3
"""AURA Live launcher: the only place that reads argv, the environment and config files.

    python3 launch.py [options]            the browser app (see --help)
    python3 launch.py replay VIDEO ...     run the engine over a video file, JSON lines out
    python3 launch.py export REC --out F.zip   bundle a recording (mp4 with both voices, captions)
    python3 launch.py check-model ID_OR_DIR   does a checkpoint see what the engine feeds it?
    python3 launch.py annotate REC --at S --say TEXT   note what AURA should have done (--list, --delete N)
    python3 launch.py finetune REC... --out DIR   a LoRA adapter learnt from the notes (--adapter DIR loads it)
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

SUBCOMMANDS = ("replay", "test", "export", "check-model", "annotate", "finetune")


# --- options shared by every command that builds a Config -------------------------------
# (flag, config section, config field, argparse kwargs); "store_true"/"store_false" flags
# set the field to True/False when given.
MODEL_FLAGS: list[tuple[str, str, str, dict]] = [
    ("--model", "engine", "model", dict(metavar="ID_OR_DIR", help="AURA weights: HF id or local dir (default aurateam/AURA)")),
    ("--vlm-device", "engine", "device", dict(metavar="DEV", help="auto | cpu | cuda:N | cuda:N,cuda:M (split); auto: with 2 GPUs the VLM uses cuda:1")),
    ("--dtype", "engine", "dtype", dict(help="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")),
    ("--backend", "engine", "backend", dict(help="auto | reference | fast (the GPU fast path)")),
    ("--pixel-budget", "engine", "pixel_budget", dict(metavar="benchmark|demo|N", help="pixels per 1-s chunk (both frames): benchmark = 602112, what the published scores used (default; 640x480 -> 266 tokens), demo = 786432, the authors' live demo (640x480 -> 300 tokens), or a number")),
    ("--language", "engine", "language", dict(help='reply language, e.g. "English" (appended to the system prompt)')),
    ("--temperature", "engine", "temperature", dict(type=float, help="sampling temperature; 0 = greedy (default)")),
    ("--seed", "engine", "seed", dict(type=int, help="random seed (same model + seed = same decisions)")),
    ("--adapter", "engine", "adapter", dict(metavar="DIR", help="a LoRA adapter (launch.py finetune) merged into the model at load")),
    ("--preset", "app", "preset", dict(choices=["offline"], help="offline: tiny random models + espeak-ng voice, built locally; answers are meaningless")),
]
SPEECH_FLAGS: list[tuple[str, str, str, dict]] = [
    ("--asr-model", "speech", "asr_model", dict(metavar="NAME_OR_DIR", help="faster-whisper model name or CTranslate2 dir (auto: GPU/CPU default)")),
    ("--asr-device", "speech", "asr_device", dict(metavar="DEV", help="auto | cpu | cuda:N")),
    ("--tts", "speech", "tts", dict(choices=["coqui", "espeak"], help="voice engine (default coqui)")),
    ("--tts-model", "speech", "tts_model", dict(metavar="NAME_OR_DIR", help="Coqui model name (tts_models/...), Hugging Face id (owner/name) or local model dir")),
    ("--tts-device", "speech", "tts_device", dict(metavar="DEV", help="auto | cpu | cuda:N")),
]
APP_FLAGS: list[tuple[str, str, str, dict]] = [
    ("--host", "app", "host", dict(help="address to bind (default 127.0.0.1: this machine only)")),
    ("--port", "app", "port", dict(type=int, help="port (default 7860)")),
    ("--share", "app", "share", dict(action="store_true", default=None, help="create a public Gradio share link")),
    ("--auth", "app", "auth", dict(metavar="USER:PASS", help="require this login for the app and the Review tab")),
    ("--ssl-certfile", "app", "ssl_certfile", dict(metavar="FILE", help="HTTPS certificate (needed for camera/mic from other devices)")),
    ("--ssl-keyfile", "app", "ssl_keyfile", dict(metavar="FILE", help="HTTPS private key")),
    ("--max-sessions", "app", "max_sessions", dict(type=int, help="browser sessions admitted at once (default 2); others see 'busy'")),
    ("--local-devices", "app", "local_devices", dict(action="store_true", default=None, help="use this machine's camera, microphone and speaker; captions in the terminal, no browser")),
    ("--camera", "app", "camera", dict(metavar="INDEX_OR_FILE", help="local camera index or a video file (with --local-devices)")),
    ("--mic", "app", "mic", dict(metavar="NAME_OR_INDEX", help="local microphone (see --list-devices)")),
    ("--speaker", "app", "speaker", dict(metavar="NAME_OR_INDEX", help="local speaker (see --list-devices)")),
    ("--push-to-talk", "app", "hands_free", dict(action="store_false", default=None, help="start in push-to-talk mode instead of hands-free")),
    ("--no-proactive", "app", "proactive", dict(action="store_false", default=None, help="start with proactive remarks off")),
    ("--no-voice", "app", "voice", dict(action="store_false", default=None, help="captions only, no spoken replies")),
    ("--no-record", "app", "record", dict(action="store_false", default=None, help="do not record sessions")),
    ("--recordings-dir", "app", "recordings_dir", dict(metavar="DIR", help="where recordings go (default ./recordings)")),
    ("--metrics", "app", "metrics", dict(choices=["on", "off"], help="Prometheus metrics at GET /metrics (default on)")),
    ("--metrics-public", "app", "metrics_public", dict(action="store_true", default=None, help="with --auth: serve /metrics without the login")),
    ("--drain-s", "app", "drain_s", dict(type=float, metavar="SECONDS", help="on SIGTERM or Ctrl-C: stop admitting, let replies finish this long, close every recording (default 10)")),
]
CONFIG_FLAGS = MODEL_FLAGS + SPEECH_FLAGS + APP_FLAGS


def add_config_flags(parser: argparse.ArgumentParser, flags=MODEL_FLAGS) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file with engine/speech/app sections")
    for flag, _section, _name, kwargs in flags:
        kwargs = dict(kwargs)
        kwargs.setdefault("default", None)
        parser.add_argument(flag, dest=flag.lstrip("-").replace("-", "_"), **kwargs)


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


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# --- the app --------------------------------------------------------------------------
def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 launch.py",
        description="AURA Live: a real-time voice-and-camera assistant. Starts the browser app "
                    "(http://127.0.0.1:7860 by default) with the real models, downloading them on "
                    "first use.",
        epilog="Other commands: 'launch.py replay VIDEO|RECORDING' (run a file through the model, JSON "
               "lines out), 'launch.py export RECORDING --out F.zip', 'launch.py check-model ID_OR_DIR' "
               "(does a checkpoint see what the engine feeds it?), 'launch.py test' (set up and run "
               "the tests). Settings precedence: command line > AURA_<SECTION>_<FIELD> environment "
               "variables > --config file > defaults.",
    )
    parser.add_argument("--list-devices", action="store_true", help="list cameras, microphones and speakers, then exit")
    add_config_flags(parser, CONFIG_FLAGS)
    return parser


def cmd_app(argv: list[str]) -> int:
    args = app_parser().parse_args(argv)
    if args.list_devices:
        from app.devices.listing import list_devices
        print(list_devices())
        return 0
    try:
        cfg = load_config(args)
        from app.main import run_app
        return run_app(cfg)
    except ValueError as e:
        return fail(str(e))


# --- replay ---------------------------------------------------------------------------
def cmd_replay(argv: list[str]) -> int:
    """Run the engine over a video file (JSON lines out, app/replay.py), or re-run a recording
    folder through the current models and compare (app/recording/rerun.py)."""
    parser = argparse.ArgumentParser(prog="launch.py replay", description=cmd_replay.__doc__)
    parser.add_argument("video", metavar="VIDEO|RECORDING_DIR",
                        help="a video file (anything OpenCV reads: mp4, y4m, ...) or a recording folder")
    parser.add_argument("--ask", action="append", default=[], metavar="SECONDS:TEXT",
                        help="video: a typed question at that stream time (repeatable)")
    parser.add_argument("--out", metavar="FILE.jsonl|DIR",
                        help="video: write here instead of stdout; recording: the comparison folder "
                             "(default replays/<recording>-<time>)")
    parser.add_argument("--dump-context", action="store_true", help="video: add the context token ids to each step")
    parser.add_argument("--realtime", action="store_true", help="video: pace the video in real time")
    parser.add_argument("--record", metavar="DIR",
                        help="video: also record the run into DIR/<time>-replay/ like a live session "
                             "(Review tab, export, replay RECORDING_DIR)")
    add_config_flags(parser, MODEL_FLAGS + SPEECH_FLAGS)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args)
    except ValueError as e:
        return fail(str(e))
    if Path(args.video).is_dir():
        if args.record or args.ask:
            return fail("--record and --ask apply to a video file, not to a recording folder")
        return _replay_recording(cfg, Path(args.video), args.out)
    from app.replay import main as replay
    return replay(cfg, args.video, args.ask, args.out, args.dump_context, args.realtime,
                  cache_dir=ROOT / ".cache", record=args.record)


def _replay_recording(cfg, rec_dir: Path, out: str | None) -> int:
    import time
    from app.main import CACHE, progress
    from app.presets import apply_preset
    from app.recording.rerun import replay_recording
    from model.vlm import ModelLoadError
    from speech.asr import AsrLoadError
    out_dir = Path(out) if out else ROOT / "replays" / f"{rec_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        cfg, _banner = apply_preset(cfg, CACHE, progress)
        result = replay_recording(cfg, rec_dir, out_dir, progress)
    except (ValueError, ModelLoadError, AsrLoadError, OSError) as e:
        return fail(str(e))
    steps = result["steps"]
    print(f"{'identical' if result['identical_decisions'] else 'CHANGED'} decisions: "
          f"{len(steps['changed'])} of {steps['compared']} steps changed, "
          f"{len(result['replies']['changed'])} replies changed"
          + (f"; annotated moments done: {sum(a['done'] for a in result['annotations'])} of "
             f"{len(result['annotations'])}" if result.get("annotations") else "")
          + f"; details in {out_dir}")
    return 0


# --- check-model ----------------------------------------------------------------------
def cmd_check_model(argv: list[str]) -> int:
    """Compare a checkpoint's own tokenizer, chat template and processor with what the engine
    feeds it (model/check.py; no weights loaded): special ids, the rendering of a scripted
    stream, pixels and tokens per chunk. Exit 0 = all equal, 1 = a mismatch, 2 = unreadable."""
    parser = argparse.ArgumentParser(prog="launch.py check-model", description=cmd_check_model.__doc__)
    parser.add_argument("checkpoint", metavar="ID_OR_DIR", help="HF id or local checkpoint directory")
    add_config_flags(parser, MODEL_FLAGS)
    args = parser.parse_args(argv)
    args.model = args.checkpoint
    try:
        cfg = load_config(args)
    except ValueError as e:
        return fail(str(e))
    from model.check import run_check
    return run_check(cfg.engine)


# --- test -----------------------------------------------------------------------------
def cmd_test(argv: list[str]) -> int:
    """Run the whole suite except GPU tests (unless a GPU is present); extra args go to pytest."""
    import pytest
    args = ["-q", "--run-all", str(ROOT / "tests"), *argv]
    return int(pytest.main(args))


# --- export ---------------------------------------------------------------------------
def cmd_export(argv: list[str]) -> int:
    """Bundle one recording folder into a zip (app/recording/export.py); a bad folder is exit 2."""
    parser = argparse.ArgumentParser(prog="launch.py export", description=cmd_export.__doc__)
    parser.add_argument("recording", metavar="RECORDING_DIR")
    parser.add_argument("--out", metavar="FILE.zip", help="default: ./<recording name>.zip")
    args = parser.parse_args(argv)
    from app.recording.export import export
    rec = Path(args.recording)
    try:
        out = export(rec, Path(args.out) if args.out else Path(f"{rec.resolve().name}.zip"))
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


# --- annotate -------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr, exit 2 (argparse would print the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}\n")


def cmd_annotate(argv: list[str]) -> int:
    """Note what AURA should have done at a moment of a recording (app/recording/annotations.py),
    list the notes, or delete one. Bad input: one line, exit 2."""
    parser = OneLineParser(prog="launch.py annotate", description=cmd_annotate.__doc__)
    parser.add_argument("recording", metavar="RECORDING_DIR")
    parser.add_argument("--at", metavar="SECONDS", help="stream time of the moment (as in the Review tab)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--say", metavar="TEXT", help="AURA should have said TEXT here")
    what.add_argument("--silent", action="store_true", help="AURA should have stayed silent here")
    what.add_argument("--better", metavar="TEXT", help="a better answer than the one AURA gave here")
    what.add_argument("--list", action="store_true", help="print the notes, one a line")
    what.add_argument("--delete", metavar="N", type=int, help="delete note number N (as --list shows it)")
    args = parser.parse_args(argv)
    from app.recording import annotations as notes
    rec = Path(args.recording)
    try:
        if args.list or args.delete is not None:
            if args.at is not None:
                return fail("--at goes with --say, --silent or --better")
            if args.list:
                found = notes.load(notes.check_dir(rec))
                print("\n".join(map(notes.format_line, found)) if found else "no notes")
            else:
                print(f"deleted {notes.format_line(notes.delete(rec, args.delete))}")
            return 0
        if args.at is None:
            return fail("--at SECONDS is required with --say, --silent or --better")
        kind, text = ("say", args.say) if args.say is not None else \
            ("better", args.better) if args.better is not None else ("silent", "")
        print(notes.format_line(notes.add(rec, args.at, kind, text)))
    except (ValueError, OSError) as e:
        return fail(str(e))
    return 0


# --- finetune -------------------------------------------------------------------------
def cmd_finetune(argv: list[str]) -> int:
    """Train a LoRA adapter on annotated recordings (app/teach/finetune.py): AURA's stream
    samples with the notes in place of what the model did, the silent-speech balanced loss.
    Run the same command again to resume. Bad input: one line, exit 2."""
    parser = OneLineParser(prog="launch.py finetune", description=cmd_finetune.__doc__)
    parser.add_argument("sources", nargs="+", metavar="REC_OR_DIR",
                        help="recording folders, or folders of recordings (those with notes are used)")
    parser.add_argument("--out", required=True, metavar="ADAPTER_DIR", help="where the adapter and report go")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 60, or from --epochs)")
    parser.add_argument("--epochs", type=float, help="passes over the samples instead of --steps")
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (default 1e-2)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--batch", type=int, default=3, help="samples per step (default 3)")
    parser.add_argument("--hold-out", type=float, default=0.0, metavar="FRACTION",
                        help="fraction of the notes kept out of training and measured on")
    add_config_flags(parser, MODEL_FLAGS)
    args = parser.parse_args(argv)
    import time
    from app.main import CACHE, progress
    from app.presets import apply_preset
    from app.teach.finetune import FinetuneOptions, finetune
    from model.vlm import ModelLoadError
    from speech.asr import AsrLoadError
    started = time.perf_counter()
    try:
        opts = FinetuneOptions(steps=args.steps, epochs=args.epochs, lr=args.lr, rank=args.rank,
                               batch=args.batch, hold_out=args.hold_out,
                               seed=args.seed if args.seed is not None else 0)
        cfg, _banner = apply_preset(load_config(args), CACHE, progress)
        report = finetune(cfg, [Path(s) for s in args.sources], Path(args.out), opts, progress)
    except (ValueError, ModelLoadError, AsrLoadError, OSError) as e:
        return fail(str(e))
    done = report["fixed"]
    print(f"adapter in {args.out}: {done['trained'][0]} of {done['trained'][1]} notes fixed "
          f"({done['held_out'][0]} of {done['held_out'][1]} held out); silent steps kept "
          f"{report['settings']['silent_kept'][0]} of {report['settings']['silent_kept'][1]}; "
          f"{report['samples_per_s']} samples/s; "
          f"{(time.perf_counter() - started) / 60:.1f} min; report {Path(args.out) / 'report.md'}")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    from app.bootstrap import ensure_environment
    ensure_environment("test" if command == "test" else "app")
    if command == "test":
        return cmd_test(argv[1:])
    if command == "replay":
        return cmd_replay(argv[1:])
    if command == "export":
        return cmd_export(argv[1:])
    if command == "check-model":
        return cmd_check_model(argv[1:])
    if command == "annotate":
        return cmd_annotate(argv[1:])
    if command == "finetune":
        return cmd_finetune(argv[1:])
    return cmd_app(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
