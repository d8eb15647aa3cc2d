"""Argument parsing of `f2f export` and `f2f init-avatar` (torch side)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_export_parser(commands) -> None:
    parser = commands.add_parser(
        "export", help="checkpoint -> ONNX (+ TensorRT) -> Triton model repository",
        description="Exports the guest encoder, motion generator and renderer with a dynamic batch axis, "
                    "checks each against torch at batch 1, 4 and 16, and writes the Triton configs and "
                    "the avatar_step ensemble. OUT/export_report.json holds the parity figures.")
    parser.add_argument("checkpoint", type=Path, help="avatar checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="model repository to write")
    parser.add_argument("--tensorrt", action="store_true", help="also build TensorRT plans (needs TensorRT + a GPU)")
    parser.add_argument("--fp16", action="store_true", help="fp16 TensorRT plans")
    parser.add_argument("--int8-renderer", action="store_true",
                        help="CPU serving: an int8 renderer (onnxruntime), kept only if its frames match the float one's")
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch Triton forms (default 64)")
    parser.add_argument("--instance-kind", choices=("gpu", "cpu"), default="gpu", help="Triton instance kind")
    parser.add_argument("--instances", type=int, default=1, help="Triton instances per model")
    parser.add_argument("--version", type=int, default=1, help="model version directory to write")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from export.exporter import ExportOptions, export_checkpoint
    from export.model_repository import BatchingConfig
    from export.onnx_export import ExportError
    from export.tensorrt_plans import TensorRTUnavailable

    if args.max_batch < 1 or args.instances < 1 or args.version < 1:
        print("error: --max-batch, --instances and --version must be positive", file=sys.stderr)
        return 2
    if args.fp16 and not args.tensorrt:
        print("error: --fp16 applies to TensorRT plans; add --tensorrt", file=sys.stderr)
        return 2
    batching = BatchingConfig(max_batch_size=args.max_batch, instance_count=args.instances,
                              instance_kind=f"KIND_{args.instance_kind.upper()}")
    options = ExportOptions(tensorrt=args.tensorrt, fp16=args.fp16, version=args.version, batching=batching,
                            quiet=args.quiet, int8_renderer=args.int8_renderer)
    try:
        report = export_checkpoint(args.checkpoint, args.out, options)
    except (ExportError, TensorRTUnavailable, FileNotFoundError, ValueError) as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    for row in report["parity"]:
        print(f"{row['network']:>16} batch {row['batch']:>2}: max_abs_diff {row['max_abs_diff']:.2e}")
    int8 = report["networks"].get("renderer", {}).get("int8")
    if int8 and not int8["kept"]:
        print(f"        renderer int8: not kept, the renderer stays float ({int8['reason']})")
    elif int8:
        print(f"        renderer int8: PSNR vs float {int8['psnr_db_median']} dB (p5 {int8['psnr_db_p5']}), face found "
              f"{int8['face_found_int8']} (float {int8['face_found_float']}), jawOpen diff {int8['jaw_open_abs_difference']}, "
              f"{int8['ms_per_frame_float']} -> {int8['ms_per_frame_int8']} ms")
    print(f"model repository: {args.out} ({report['platform']}, {report['seconds']} s)")
    return 0


def add_init_avatar_parser(commands) -> None:
    parser = commands.add_parser(
        "init-avatar", help="write a randomly initialised avatar checkpoint (for tests and smoke runs)",
        description="An untrained avatar of the real architectures; --tiny makes small instances.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="small networks (64x64 frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame-size", type=int, default=None, help="rendered frame size (default 256; tiny 64)")
    parser.set_defaults(run=_run_init_avatar)


def _run_init_avatar(args) -> int:
    import dataclasses

    from models.avatar import AvatarConfig, random_avatar, save_avatar, tiny_config

    config = tiny_config() if args.tiny else AvatarConfig(name="untrained", notes={"trained": False})
    if args.frame_size:
        config = dataclasses.replace(config, spec=dataclasses.replace(config.spec, frame_size=args.frame_size))
    save_avatar(random_avatar(config, seed=args.seed), args.out)
    print(args.out)
    return 0


