"""Build the served model repository from the ONNX one, on the serving GPU, at container start.

    python docker/build_plans.py --onnx-repository /opt/f2f/model_repository --out /models/triton [--fp16]

TensorRT plans are specific to the GPU model and the TensorRT version that build them, so they are
built here, where they will run, with the `trtexec` that ships in the NGC Triton image, and cached
in the output volume: a restart on the same GPU with the same models and TensorRT skips the build
(`.f2f-plans.json` records what a build was made from).

For every `onnxruntime_onnx` model: `trtexec` builds `<out>/<model>/<version>/model.plan` with one
optimisation profile over the batch axis (1 .. max_batch_size; inputs and outputs stay FP32, fp16
only inside), and the config is copied with `platform: "tensorrt_plan"`. Everything else in the
config (tensors, batching, instance groups, the `f2f_avatar_spec` parameter) is kept. The ensemble
is copied as is. `--mode onnx` copies the ONNX models instead (Triton's onnxruntime backend): the
fallback where no trtexec is available. No torch here: only the Triton client's protobufs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
STAMP = ".f2f-plans.json"
TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")


@dataclass(frozen=True)
class PlanJob:
    model: str
    onnx: Path
    plan: Path
    command: list[str]


def read_config(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def write_config(model_dir: Path, config: mc.ModelConfig) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))


def version_of(model_dir: Path) -> str:
    versions = sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    if not versions:
        raise FileNotFoundError(f"no numbered version directory in {model_dir}")
    return versions[-1]


def shapes_argument(config: mc.ModelConfig, batch: int) -> str:
    """trtexec's `name:BxD1xD2,...` for every input at one batch size."""
    return ",".join(f"{t.name}:" + "x".join(str(d) for d in (batch, *t.dims)) for t in config.input)


def trtexec_command(trtexec: str, config: mc.ModelConfig, onnx: Path, plan: Path, fp16: bool,
                    opt_batch: int) -> list[str]:
    top = config.max_batch_size
    command = [trtexec, f"--onnx={onnx}", f"--saveEngine={plan}",
               f"--minShapes={shapes_argument(config, 1)}",
               f"--optShapes={shapes_argument(config, min(opt_batch, top))}",
               f"--maxShapes={shapes_argument(config, top)}",
               "--skipInference"]
    if fp16:
        command.append("--fp16")
    return command


def find_trtexec(explicit: str | None) -> str | None:
    for candidate in ((explicit,) if explicit else TRTEXEC_CANDIDATES):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment_fingerprint(trtexec: str | None) -> dict[str, str]:
    """What a plan depends on besides the ONNX file: the GPU, its driver, TensorRT's version."""
    gpu = _output(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]).strip()
    match = re.search(r"TensorRT v(\d+)", _output([trtexec, "--help"])) if trtexec else None
    return {"gpu": gpu or "unknown", "tensorrt": match.group(1) if match else "unknown"}


def source_digest(repository: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in repository.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(repository)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def plan_repository(source: Path, out: Path, mode: str, fp16: bool, trtexec: str,
                    opt_batch: int = 8) -> list[PlanJob]:
    """Write every config (and copy ONNX models in onnx mode) into `out`; return the plans to build."""
    jobs = []
    for config_path in sorted(source.glob("*/config.pbtxt")):
        model_dir = config_path.parent
        config = read_config(model_dir)
        version = version_of(model_dir)
        target = out / model_dir.name
        (target / version).mkdir(parents=True, exist_ok=True)
        if config.platform == ONNX_PLATFORM and mode == "tensorrt":
            onnx = model_dir / version / (config.default_model_filename or "model.onnx")
            plan = target / version / "model.plan"
            jobs.append(PlanJob(config.name, onnx, plan, trtexec_command(trtexec, config, onnx, plan, fp16, opt_batch)))
            config.platform = TENSORRT_PLATFORM
            config.default_model_filename = "model.plan"
        elif config.platform == ONNX_PLATFORM:  # onnx mode: serve the ONNX files with onnxruntime
            for f in (model_dir / version).iterdir():  # model.onnx and any external-data files
                shutil.copy2(f, target / version / f.name)
        write_config(target, config)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-repository", type=Path, required=True, help="the repository `f2f export` wrote")
    parser.add_argument("--out", type=Path, required=True, help="the repository tritonserver will serve")
    parser.add_argument("--mode", choices=("tensorrt", "onnx", "auto"), default="auto",
                        help="auto: TensorRT plans when trtexec is found, else the ONNX models")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--opt-batch", type=int, default=8, help="batch size TensorRT optimises for")
    parser.add_argument("--trtexec", default=None, help="path to trtexec (default: PATH, then /usr/src/tensorrt/bin)")
    parser.add_argument("--dry-run", action="store_true", help="write configs, print trtexec commands, build nothing")
    args = parser.parse_args(argv)

    trtexec = find_trtexec(args.trtexec)
    mode = args.mode
    if mode == "auto":
        mode = "tensorrt" if trtexec else "onnx"
    if mode == "tensorrt" and not trtexec and not args.dry_run:
        print("build_plans: trtexec not found (looked for it on PATH and in /usr/src/tensorrt/bin); "
              "use --mode onnx to serve the ONNX models", file=sys.stderr)
        return 1
    trtexec = trtexec or "trtexec"

    wanted = {"source": source_digest(args.onnx_repository), "mode": mode, "fp16": args.fp16,
              **(environment_fingerprint(trtexec) if mode == "tensorrt" and not args.dry_run else {})}
    stamp = args.out / STAMP
    if not args.dry_run and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        print(f"build_plans: {args.out} is up to date ({mode}, {wanted.get('gpu', 'no gpu')})")
        return 0

    if args.out.exists() and not args.dry_run:
        shutil.rmtree(args.out)  # a stale or half-built repository: start over
    jobs = plan_repository(args.onnx_repository, args.out, mode, args.fp16, trtexec, args.opt_batch)
    for job in jobs:
        print(" ".join(job.command), flush=True)
        if args.dry_run:
            continue
        started = time.monotonic()
        partial = job.plan.with_name(job.plan.name + ".partial")
        command = [c.replace(f"--saveEngine={job.plan}", f"--saveEngine={partial}") for c in job.command]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:] + done.stderr[-4000:], file=sys.stderr)
            print(f"build_plans: trtexec failed for {job.model} ({done.returncode})", file=sys.stderr)
            return 1
        os.replace(partial, job.plan)
        print(f"build_plans: {job.model} plan built in {time.monotonic() - started:.0f} s", flush=True)
    if not args.dry_run:
        stamp.write_text(json.dumps(wanted, indent=1, sort_keys=True))
    print(f"build_plans: {args.out} ready ({mode}, {len(jobs)} plan(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
