"""The `f2f` command. Each subcommand lives with the code it runs; this file only parses arguments."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if width < 320 or height < 180 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"size must be even and at least 320x180, got {text!r}")
    return width, height


def _fps(text: str):
    from f2f.timebase import parse_fps

    fps = parse_fps(text)
    if float(fps) not in (25.0, float(parse_fps("29.97"))):
        raise argparse.ArgumentTypeError(f"fps must be 25 or 29.97, got {text!r}")
    return fps


def positive(kind):
    """An argparse type: `kind` parsed and > 0 (shared by every command's parser)."""
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value

    return parse


def _minutes(text: str) -> float:
    value = float(text)
    if not value >= 0.5:  # an intro, a few turns and an outro need half a minute
        raise argparse.ArgumentTypeError(f"minutes must be at least 0.5, got {text!r}")
    return value


def _add_synth(commands) -> None:
    parser = commands.add_parser(
        "synth", help="generate synthetic two-person talk-show episodes with ground truth",
        description="Writes episode_NNN.mp4 (H.264 + AAC) and episode_NNN.json (ground truth) per episode. "
                    "Deterministic per seed; rerunning skips episodes already complete.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--episodes", type=positive(int), default=1)
    parser.add_argument("--minutes", type=_minutes, default=1.0, help="length of each episode (at least 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=_fps, default="25", help="25 or 29.97")
    parser.add_argument("--size", type=_size, default="1280x720", help="WIDTHxHEIGHT, e.g. 1280x720 or 640x360")
    parser.add_argument("--style", choices=["broadcast", "interview"], default="broadcast",
                        help="broadcast: a talk show as television cuts it (panels, close-ups, cutaways); "
                             "interview: one guest, mostly two-shots, a listening host (training footage)")
    parser.add_argument("--workers", type=positive(int), default=1,
                        help="episodes rendered in parallel processes (the files are the same for any count)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from pipeline.synth.episode import SynthConfig, generate_series

    config = SynthConfig(minutes=args.minutes, seed=args.seed, fps=args.fps, size=args.size, style=args.style)
    started = time.perf_counter()
    files = generate_series(args.out, args.episodes, config, progress=not args.quiet, workers=args.workers)
    elapsed = time.perf_counter() - started
    content = args.episodes * args.minutes * 60.0
    for f in files:
        print(f"{f.video}\n{f.ground_truth}")
    print(f"{args.episodes} episode(s), {content:.0f} s of video in {elapsed:.1f} s "
          f"({content / max(elapsed, 1e-9):.2f}x real time)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f2f", description="f2f: a real-time reactive talking-head avatar service")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(commands)
    from pipeline.curate.cli import add_curate_parser
    add_curate_parser(commands)
    from server.cli import add_client_parser, add_serve_parser
    add_serve_parser(commands), add_client_parser(commands)
    _add_torch_side(commands)
    return parser


def _add_torch_side(commands) -> None:
    """Commands that need torch (export, init-avatar, train, evaluate) exist only where torch is installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    from benchmarks.cli import add_bench_parser
    from export.cli import add_export_parser, add_init_avatar_parser
    from pipeline.evaluate.run import add_evaluate_parser
    from pipeline.train.run import add_train_parser

    add_export_parser(commands)
    add_init_avatar_parser(commands)
    add_bench_parser(commands)
    add_train_parser(commands)
    add_evaluate_parser(commands)


def main(argv: list[str] | None = None) -> int:
    # onnxruntime's wheels otherwise keep a device id and usage events and upload them when online.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
