"""`f2f curate RAW_DIR OUT_DIR ...` and `f2f curate label OUT_DIR [--raw RAW_DIR]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_curate_parser(commands) -> None:
    parser = commands.add_parser(
        "curate", help="turn long two-person episodes into paired host/guest training clips",
        description="Curates RAW_DIR's episodes into OUT_DIR (manifest.jsonl, clips/, report.json, dataset_card.md). "
                    "Resumable: rerun the same command after an interruption. "
                    "`f2f curate label OUT_DIR --raw RAW_DIR` serves the labelling page on 127.0.0.1.")
    parser.add_argument("raw_dir", type=Path, help="folder of raw episode videos (or the word `label`)")
    parser.add_argument("out_dir", type=Path, help="output folder (for `label`: the curation output folder)")
    parser.add_argument("--workers", type=int, default=1, help="episodes processed in parallel")
    parser.add_argument("--labels-from-ground-truth", action="store_true",
                        help="synthetic episodes: take the small labelled sets from the ground truth beside them")
    parser.add_argument("--host-crops", type=Path, default=None,
                        help="folder of confirmed host face crops (instead of labelling faces on the page)")
    parser.add_argument("--crop-size", type=int, default=256, help="side of the exported square crops")
    parser.add_argument("--raw", type=Path, default=None, help="for `label`: the raw folder (to play voice segments)")
    parser.add_argument("--port", type=int, default=8765, help="for `label`: port on 127.0.0.1")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_curate)


def run_curate(args) -> int:
    if str(args.raw_dir) == "label":
        return _serve_labels(args)
    from pipeline.curate.labels import NeedsLabels
    from pipeline.curate.pipeline import CurateConfig, Curator

    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.crop_size < 64 or args.crop_size % 2:
        print("--crop-size must be even and at least 64", file=sys.stderr)
        return 2
    config = CurateConfig(raw_dir=args.raw_dir, out_dir=args.out_dir, workers=args.workers,
                          labels_from_ground_truth=args.labels_from_ground_truth, host_crops=args.host_crops,
                          crop_size=args.crop_size, progress=not args.quiet)
    try:
        report = Curator(config).run()
    except NeedsLabels as error:
        print(f"labels needed: {error}", file=sys.stderr)
        return 3
    except FileNotFoundError as error:
        print(str(error), file=sys.stderr)
        return 2
    headline = {k: report[k] for k in ("clips_exported", "clip_minutes", "raw_minutes", "segment_precision",
                                         "segment_recall", "der", "host_speaker_f1", "identity_accuracy",
                                         "crop_containment", "throughput_video_minutes_per_minute") if k in report}
    print(json.dumps(headline, indent=1))
    if report["skipped_inputs"]:
        print(f"skipped {len(report['skipped_inputs'])} input(s), see {config.out_dir / 'report.json'}", file=sys.stderr)
    return 0


def _serve_labels(args) -> int:
    from pipeline.curate.labeling import LabelServer

    server = LabelServer(args.out_dir, args.raw).serve(args.port)
    print(f"labelling page: http://127.0.0.1:{server.server_address[1]}/  (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
