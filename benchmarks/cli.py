"""`f2f bench ...`: each benchmark writes JSON + a plot."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks.latency_cli import add_latency_parsers
from benchmarks.soak import add_soak_parser


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must look like 1,4,16,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batches must be positive, got {text!r}")
    return values


def add_bench_parser(commands) -> None:
    parser = commands.add_parser("bench", help="benchmarks (JSON + plot)")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    engines = benches.add_parser(
        "engines", help="engine latency and throughput against batch size, embedded vs Triton",
        description="Per-call latency (median, p95) and throughput for batch 1, 4, 16, 64 on both backends, "
                    "Triton's overhead against embedded at batch 1 and 16, and GPU figures when a GPU is present.")
    engines.add_argument("--json", type=Path, required=True, help="where to write the results")
    engines.add_argument("--plot", type=Path, default=None, help="PNG (default: beside the JSON)")
    engines.add_argument("--checkpoint", type=Path, default=None,
                         help="avatar checkpoint (default: avatars/default when present, else an untrained "
                              "avatar of the default architecture)")
    engines.add_argument("--batches", type=_batches, default=(1, 4, 16, 64))
    engines.add_argument("--seconds", type=float, default=2.0, help="time spent per batch size and backend")
    engines.add_argument("--no-triton", action="store_true", help="embedded backend only")
    engines.set_defaults(run=_run_engines)
    add_latency_parsers(benches)  # `latency` and `sessions` (benchmarks/latency_cli.py)
    add_soak_parser(benches)  # `soak` (benchmarks/soak.py)


def _run_engines(args) -> int:
    from benchmarks.engines import REPO_ROOT, EngineBenchConfig, plot_engine_bench, run_engine_bench

    checkpoint = args.checkpoint
    if checkpoint is None and (REPO_ROOT / "avatars" / "default" / "config.json").is_file():
        checkpoint = REPO_ROOT / "avatars" / "default"
    config = EngineBenchConfig(checkpoint=checkpoint, batches=args.batches, seconds_per_point=args.seconds,
                               triton=not args.no_triton)
    os.environ.setdefault("PYTHONPATH", str(REPO_ROOT))
    result = run_engine_bench(config)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot = args.plot or args.json.with_suffix(".png")
    plot_engine_bench(result, plot)
    for backend in ("embedded", "triton"):
        for kind in ("step", "encode"):
            for row in result.get(backend, {}).get(kind, []):
                print(f"{backend:>8} {kind:>6} batch {row['batch']:>2}: median {row['median_ms']:8.2f} ms  "
                      f"p95 {row['p95_ms']:8.2f} ms  {row['items_per_s']:8.1f} items/s")
    if "triton_overhead_ratio" in result:
        print(f"triton / embedded (step median): {result['triton_overhead_ratio']}")
    print(f"gpu: {result['gpu']}" if not result["gpu"].get("available") else
          f"gpu: {result['gpu']['device']} sessions/GPU at 25 fps: {result['gpu']['sessions_per_gpu_at_25fps']}")
    print(f"wrote {args.json} and {plot}", file=sys.stderr)
    return 0
