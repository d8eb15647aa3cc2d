"""`f2f bench latency` and `f2f bench sessions`: argument parsing and the printed summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from f2f.cli import positive


def _variants(text: str) -> tuple[str, ...]:
    from benchmarks.latency import VARIANTS

    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"variants are a comma list of {', '.join(VARIANTS)}; got {text!r}")
    return names


def _avatar_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="an exported avatar to serve (default: the default avatar, exported when needed)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="avatar checkpoint to export and serve instead (default avatars/default)")
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs in this folder")


def add_latency_parsers(benches) -> None:
    latency = benches.add_parser(
        "latency", help="audio/partner-to-photon latency, fps, A/V offset, per-stage times, beside the WebRTC floor",
        description="Drives the gateway (embedded backend) and a bare aiortc echo server over loopback with the "
                    "Python client, alternating, and reports latencies (median/p95/p99), fps, frame gaps, "
                    "first-frame time, A/V offset, the gateway's per-stage times, the echo floor and the ratio.")
    latency.add_argument("--seconds", type=positive(float), default=60.0, help="measured seconds per variant")
    latency.add_argument("--rounds", type=positive(int), default=3, help="alternations (a fresh session each)")
    latency.add_argument("--variants", type=_variants, default=None,
                         help="comma list of avatar, avatar-stock, avatar-gpu, echo, echo-stock "
                              "(default avatar,echo,echo-stock,avatar-stock; avatar-gpu is added where a GPU is usable)")
    latency.add_argument("--warmup-session", type=float, default=2.0,
                         help="seconds of an unmeasured first session per server (0: none)")
    latency.add_argument("--json", type=Path, required=True, help="where to write the results")
    latency.add_argument("--plot", type=Path, default=None, help="PNG (default: beside the JSON)")
    _avatar_arguments(latency)
    latency.set_defaults(run=_run_latency)

    sessions = benches.add_parser(
        "sessions", help="how many concurrent sessions hold 25 fps on this machine",
        description="Adds concurrent client sessions one at a time until one misses 25 fps (p95 frame gap over "
                    "60 ms, confirmed by a second measurement) and reports the largest count that held, with CPU "
                    "use per session.")
    sessions.add_argument("--seconds", type=positive(float), default=10.0, help="measured seconds per count")
    sessions.add_argument("--settle", type=float, default=3.0, help="seconds after adding a session before measuring")
    sessions.add_argument("--max-sessions", type=positive(int), default=8, help="stop adding at this count")
    sessions.add_argument("--min-counts", type=positive(int), default=2,
                          help="measure at least this many counts, even after a miss")
    sessions.add_argument("--json", type=Path, required=True, help="where to write the results")
    sessions.add_argument("--plot", type=Path, default=None, help="PNG (default: beside the JSON)")
    _avatar_arguments(sessions)
    sessions.set_defaults(run=_run_sessions)


def _repository(args, workdir: Path) -> tuple[Path, str]:
    from benchmarks.latency import default_model_repository

    if args.model_repository is not None:
        return args.model_repository, str(args.model_repository)
    return default_model_repository(args.checkpoint, workdir)


def _fmt(summary: dict, unit: str = "ms") -> str:
    if not summary.get("n"):
        return "no samples"
    return f"p50 {summary['p50']} {unit}, p95 {summary['p95']}, p99 {summary['p99']} (n={summary['n']})"


def _run_latency(args) -> int:
    from benchmarks.latency import DEFAULT_VARIANTS, LatencyBenchConfig, run_latency_bench, scratch_dir, write_result

    with scratch_dir() as tmp:
        repository, source = _repository(args, Path(tmp))
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
        config = LatencyBenchConfig(model_repository=repository, seconds=args.seconds, rounds=args.rounds,
                                    variants=args.variants or DEFAULT_VARIANTS,
                                    warmup_session_s=args.warmup_session, avatar_source=source, log_dir=args.logs)
        result = run_latency_bench(config, progress=lambda line: print(line, file=sys.stderr))
    plot = args.plot or args.json.with_suffix(".png")
    write_result(result, args.json, plot)
    for variant in config.variants:
        row = result.get(variant)
        if row is None:
            continue
        print(f"[{variant}] fps {row['fps']} (min over 5 s {row['fps_min_5s']}), frame gap "
              f"{_fmt(row['frame_gap_ms'])}, first frame {_fmt(row['first_frame_ms'])}")
        if "round_trip_ms" in row:
            print(f"[{variant}] round trip {_fmt(row['round_trip_ms'])}")
        else:
            print(f"[{variant}] audio->photon {_fmt(row['audio_to_photon_ms'])}")
            print(f"[{variant}] partner->photon {_fmt(row['partner_to_photon_ms'])}")
            print(f"[{variant}] A/V offset {_fmt(row['av_offset_ms'])}")
            stages = ", ".join(f"{k} {v['mean']}" for k, v in row["server_stages_ms"].items())
            print(f"[{variant}] server stage means (ms): {stages}")
    for key in ("ratio_to_floor", "above_floor_ms", "early_delivery_gain_ms"):
        if key in result:
            print(f"{key}: {json.dumps(result[key])}")
    for name, row in result.get("targets", {}).items():
        print(f"target {name} {row['target']}: {row['value']} -> {'met' if row['met'] else 'MISSED'}")
    print(f"gpu: {json.dumps(result['gpu'])[:300]}")
    print(f"wrote {args.json} and {plot}", file=sys.stderr)
    return 0


def _run_sessions(args) -> int:
    from benchmarks.latency import scratch_dir
    from benchmarks.sessions import SessionsBenchConfig, plot_sessions_bench, run_sessions_bench

    with scratch_dir() as tmp:
        repository, source = _repository(args, Path(tmp))
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
        config = SessionsBenchConfig(model_repository=repository, seconds=args.seconds, settle_s=args.settle,
                                     max_sessions=args.max_sessions, min_counts=min(args.min_counts, args.max_sessions),
                                     avatar_source=source, log_dir=args.logs)
        result = run_sessions_bench(config, progress=lambda line: print(line, file=sys.stderr))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot = args.plot or args.json.with_suffix(".png")
    plot_sessions_bench(result, plot)
    for row in result["counts"]:
        print(f"{row['sessions']} session(s): fps min {row['fps_min']}, p95 gap max {row['frame_gap_ms_p95_max']} ms, "
              f"gateway CPU {row['gateway_cpu_cores']} cores ({row['cpu_per_session_percent']} % of a core per "
              f"session), client CPU {row['client_cpu_cores']} cores -> {'held' if row['held'] else 'MISSED'}")
    print(f"largest count that held 25 fps: {result['sessions_held']} (target >= 2: "
          f"{'met' if result['sessions_held'] >= 2 else 'MISSED'})")
    print(f"gpu: {json.dumps(result['gpu'])[:300]}")
    print(f"wrote {args.json} and {plot}", file=sys.stderr)
    return 0
