"""`f2f train DATASET --out CHECKPOINT`: the avatar from a curated dataset, stage by stage.

  1. data     the manifest's train clips -> cached arrays (`pipeline/train/data.py`)
  2. guest    the guest encoder's CNN (auxiliary geometry regression), then frozen
  3. stage1   the motion generator's audio path (flow matching, guest branch off)
  4. stage2   the video branch (audio path frozen, guest-context dropout for guidance); with
              `stage2_candidates` > 1 trained once per seed, the run reacting best on val is kept
  5. renderer canonical host frames from their motion
  6. the avatar: EMA weights of every stage -> OUT/config.json + OUT/model.safetensors, and
     OUT/train_report.json (data, losses, timings)
Every stage checkpoints into RUN/<stage>/ (rerunning resumes; a changed configuration restarts the
stages it affects), TensorBoard scalars go to RUN/tensorboard/. Under `torchrun` the stages run data
parallel (rank 0 prepares the data and writes every output).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.avatar import Avatar, save_avatar
from models.motion_generator import GuestProjector
from pipeline.train.config import TrainConfig, tiny_train_config, with_steps
from pipeline.train.data import dataset_key, dataset_summary, load_dataset
from pipeline.train.flow_matching import parameter_count
from pipeline.train.loop import DistContext, TrainLoop
from pipeline.train.selection import Stage2Selector, best_candidate
from pipeline.train.stages import (GuestAppearanceObjective, GuestSampler, GuestTable, MotionObjective,
                                   MotionSampler, RendererObjective, RendererSampler, appearance_table,
                                   set_normalisers, weight_map)
from pipeline.train.windows import WindowBank

STAGES = ("guest", "stage1", "stage2", "renderer")
# Part of each stage's fingerprint: bump a stage's number when a change of code (not of configuration)
# makes its checkpoints stale, so a rerun retrains it (and what depends on it) instead of resuming.
CODE_VERSIONS = {"data": 2, "guest": 2, "stage1": 1, "stage2": 2, "renderer": 1}
REPORT_FILE = "train_report.json"
VIDEO_BRANCH_ONLY = ("guest_relative_geometry", "guest_roll_head", "guest_nod_look_head")  # generator options that shape the guest projector only


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _sampling(config: TrainConfig) -> dict:
    """What the selection's rollouts depend on beyond the weights: the temperature retrains nothing, but a
    score kept at another temperature is not this avatar's."""
    generator = config.avatar.motion_generator
    return {"temperature": generator.temperature, "sampling_steps": generator.sampling_steps}


def _fingerprint(stage: str, *parts) -> str:
    version = CODE_VERSIONS[stage]
    return _digest(*parts) if version == 1 else _digest(f"{stage} v{version}", *parts)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def _trainable(module: torch.nn.Module, on: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(on)


def _cached_appearance(path: Path, encoder, table: GuestTable, write: bool = True):
    """The frozen CNN's features of every guest frame, computed once per guest-stage result."""
    if path.is_file():
        return np.load(path)
    features = appearance_table(encoder, table)
    if not write:
        return features
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.npy")
    np.save(tmp, features)
    os.replace(tmp, path)
    return features


def wait_for_dataset(dataset: Path, timeout_s: float, poll_s: float = 30.0) -> None:
    """Curation writes report.json last: wait until it exists (or fail after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not (dataset / "report.json").is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dataset}/report.json did not appear within {timeout_s:.0f} s")
        print(f"waiting for {dataset}/report.json ...", file=sys.stderr)
        time.sleep(poll_s)


def train(dataset: Path, out: Path, run_dir: Path, config: TrainConfig, stages: tuple[str, ...] = STAGES,
          workers: int = 1, quiet: bool = False, cache: Path | None = None,
          stage2_candidate: int | None = None) -> dict:
    """Train every stage (resuming), write the avatar to `out`. -> the training report.
    `cache`: where prepared clips are kept (default RUN/cache). `stage2_candidate` i: of the stage-2
    candidates only the i-th (0-based), scored but not selected, so candidates can train in parallel processes;
    a later call with every candidate resumes them all, reads their kept scores and selects."""
    started = time.perf_counter()
    if stage2_candidate is not None and not 0 <= stage2_candidate < config.stage2_candidates:
        raise ValueError(f"stage-2 candidate {stage2_candidate} of {config.stage2_candidates} (0-based)")
    dist = DistContext.from_env()
    torch.set_num_threads(config.threads)
    dataset, run_dir = Path(dataset), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = config.avatar.spec
    timings: dict[str, float] = {}

    # 1. Data (rank 0 prepares the cache; the others read it).
    t0 = time.perf_counter()
    cache = Path(cache or run_dir / "cache")
    if dist.main:
        data = load_dataset(dataset, cache, spec, config.data, config.splits, workers, quiet)
    dist.barrier()
    if not dist.main:
        data = load_dataset(dataset, cache, spec, config.data, config.splits, 1, True)
    clips, framing = data.clips, data.framing
    data_config = dataclasses.replace(config.data, framing=framing)
    timings["data_s"] = time.perf_counter() - t0
    data_fp = _digest(CODE_VERSIONS["data"], dataset_key(dataset, spec, data_config), asdict(spec))

    torch.manual_seed(0)
    avatar = Avatar(config.avatar)
    table = GuestTable.of(clips)
    bank = WindowBank(clips, spec, framing.rest_motion())
    normalisers = set_normalisers(avatar, clips, bank)
    writer = None
    if dist.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    report: dict = {"data": dataset_summary(clips), "framing": asdict(framing), "windows": len(bank),
                    "normalisers": normalisers, "world_size": dist.world, "device": str(dist.device), "losses": {}}

    def stage_loop(name, module, objective, loop_config, fingerprint):
        return TrainLoop(name, module, objective, loop_config, run_dir / name, fingerprint, dist, writer, quiet)

    # 2. Guest encoder CNN, then frozen.
    t0 = time.perf_counter()
    encoder = avatar.guest_encoder
    _trainable(avatar, False)
    _trainable(encoder.cnn, True)
    guest_objective = GuestAppearanceObjective(encoder)
    guest_fp = _fingerprint("guest", data_fp, asdict(config.guest), config.avatar.to_dict()["guest_encoder"])
    loop = stage_loop("guest", guest_objective, guest_objective, config.guest.loop, guest_fp)
    if "guest" in stages:
        loop.run(GuestSampler(table, config.guest.loop.batch_size, config.guest.loop.seed, dist.world))
    guest_objective.load_state_dict(loop.ema_state())
    report["losses"]["guest"] = loop.summary()
    _trainable(avatar, False)
    table.appearance = _cached_appearance(run_dir / "guest" / f"appearance_{guest_fp}.npy", encoder, table,
                                          write=dist.main)
    timings["guest_s"] = time.perf_counter() - t0

    # 3. Stage 1: the audio path (the guest projector stays zero: video_on = 0).
    t0 = time.perf_counter()
    generator = avatar.motion_generator
    _trainable(generator, True)
    _trainable(generator.guest_projector, False)
    stage1 = MotionObjective(generator, None, config.stage1.mouth_weight, config.stage1.reaction_weight)
    # The sampling temperature is applied at inference only: changing it retrains nothing. Options of
    # the video branch alone (initialised apart) change stage 2, not stage 1.
    generator_config = config.avatar.to_dict()["motion_generator"]
    generator_sizes = {k: v for k, v in generator_config.items() if k != "temperature" and k not in VIDEO_BRANCH_ONLY}
    video_branch = {k: generator_config[k] for k in VIDEO_BRANCH_ONLY}
    stage1_fp = _fingerprint("stage1", data_fp, asdict(config.stage1), generator_sizes)
    loop = stage_loop("stage1", stage1, stage1, config.stage1.loop, stage1_fp)
    if "stage1" in stages:
        loop.run(MotionSampler(bank, generator, config.stage1, None, dist.world))
    if "stage2" in stages and loop.step < config.stage1.loop.steps:
        # Stage 2 freezes stage 1: on a partial one (another process still training it) it would learn
        # the wrong audio path under the same fingerprint.
        raise RuntimeError(f"stage 2 needs a finished stage 1: {run_dir / 'stage1'} is at step {loop.step} of "
                           f"{config.stage1.loop.steps}; train stage 1 first")
    stage1.load_state_dict(loop.ema_state())
    report["losses"]["stage1"] = loop.summary()
    _trainable(avatar, False)
    timings["stage1_s"] = time.perf_counter() - t0

    # 4. Stage 2: the video branch on the frozen audio path, once per candidate seed, each from the same
    # fresh start (stage 1 never trains the projector; its zero gates are what stage 2 must start from);
    # with more than one, the run that reacts best on the held-out split is kept (pipeline/train/selection.py).
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        generator.guest_projector.load_state_dict(GuestProjector(spec, config.avatar.motion_generator).state_dict())
    branch = (generator.guest_projector, encoder.geometry, encoder.fuse)
    branch_start = [copy.deepcopy(m.state_dict()) for m in branch]
    stage2 = MotionObjective(generator, encoder, config.stage2.mouth_weight, config.stage2.reaction_weight)
    seeds = config.stage2_seeds()
    # The first run keeps the single-run directory, so a one-candidate configuration resumes it.
    names = ["stage2" if index == 0 else f"stage2_seed{seed}" for index, seed in enumerate(seeds)]
    selector = None
    if len(seeds) > 1:
        selector = Stage2Selector.load(dataset, cache, spec, data_config, config.selection_split,
                                       config.default_lambda_video, config.selection_noise_seeds, quiet)
        if selector is None:  # nothing to select on: only the first run trains
            seeds, names = seeds[:1], names[:1]
    if stage2_candidate is not None:
        # One candidate, scored (and its score kept) here, so the call that selects only reads the scores.
        if stage2_candidate >= len(seeds):
            raise ValueError(f"stage-2 candidate {stage2_candidate}: {dataset} has no {config.selection_split} "
                             f"clips with ground truth to select on, so only candidate 0 trains")
        seeds, names = seeds[stage2_candidate:stage2_candidate + 1], names[stage2_candidate:stage2_candidate + 1]
    candidates = []  # (score or None, EMA state, loop summary)
    for seed, name in zip(seeds, names):
        for module, state in zip(branch, branch_start):
            module.load_state_dict(state)
            _trainable(module, True)
        stage_config = dataclasses.replace(config.stage2, loop=dataclasses.replace(config.stage2.loop, seed=seed))
        stage2_fp = _fingerprint("stage2", stage1_fp, guest_fp, asdict(stage_config), video_branch)
        loop = stage_loop(name, stage2, stage2, stage_config.loop, stage2_fp)
        if "stage2" in stages:
            loop.run(MotionSampler(bank, generator, stage_config, table, dist.world))
        state = loop.ema_state()
        stage2.load_state_dict(state)
        _trainable(avatar, False)
        score = None
        if selector is not None:
            key = _digest(stage2_fp, loop.step, config.selection_split, config.default_lambda_video,
                          config.selection_noise_seeds, _sampling(config))
            score = selector.score_kept(avatar, seed, run_dir / name / "selection.json", key, dist.main)
        if score is not None and dist.main:
            print(f"stage 2 seed {seed}: reaction F1 {score.reaction_f1:.3f} on {config.selection_split} "
                  f"(jaw corr {score.jaw_corr_motion:.3f})", file=sys.stderr)
        candidates.append((score, state, loop.summary()))
    chosen = best_candidate([c[0] for c in candidates]) if selector is not None else 0
    stage2.load_state_dict(candidates[chosen][1])
    report["losses"]["stage2"] = candidates[chosen][2]
    if selector is not None:
        report["stage2_selection"] = {
            "split": config.selection_split, "lambda_video": config.default_lambda_video,
            "noise_seeds": config.selection_noise_seeds, "clips": len(selector.split.clips),
            "chosen_seed": seeds[chosen], "candidates": [c[0].to_dict() for c in candidates]}
    timings["stage2_s"] = time.perf_counter() - t0

    # 5. Renderer.
    t0 = time.perf_counter()
    _trainable(avatar.renderer, True)
    renderer = RendererObjective(avatar.renderer, weight_map(framing, spec.frame_size, config.renderer),
                                 config.renderer.gradient_weight)
    renderer_fp = _fingerprint("renderer", data_fp, asdict(config.renderer), config.avatar.to_dict()["renderer"])
    loop = stage_loop("renderer", renderer, renderer, config.renderer.loop, renderer_fp)
    if "renderer" in stages:
        loop.run(RendererSampler(clips, config.renderer, framing, dist.world))
    renderer.load_state_dict(loop.ema_state())
    report["losses"]["renderer"] = loop.summary()
    _trainable(avatar, False)
    timings["renderer_s"] = time.perf_counter() - t0

    # 6. The avatar.
    avatar.eval()
    timings["total_s"] = time.perf_counter() - started
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    report["parameters"] = {name: parameter_count(avatar.network(name))
                            for name in ("guest_encoder", "motion_generator", "renderer")}
    report["parameters"]["total"] = sum(report["parameters"].values())
    notes = {
        "trained": True,
        "recipe": "f2f train (pipeline/train/run.py): curated clips, guest CNN + stage 1 audio path + "
                  "stage 2 video branch + renderer",
        "dataset": str(dataset.resolve()),
        "data": asdict(data_config),
        "framing": asdict(framing),
        "rest_motion": [round(float(v), 5) for v in framing.rest_motion()],
        "default_lambda_video": config.default_lambda_video,
        "stages": {k: report["losses"][k].get("steps", 0) for k in STAGES},
        "stage2_seed": seeds[chosen],
    }
    avatar.config = dataclasses.replace(config.avatar, notes=notes)
    if dist.main:
        save_avatar(avatar, out)
        report["checkpoint_bytes"] = (Path(out) / "model.safetensors").stat().st_size
        _write_json(Path(out) / REPORT_FILE, {"config": config.to_dict(), "report": report,
                                              "environment": {"torch": torch.__version__,
                                                              "python": sys.version.split()[0],
                                                              "threads": config.threads, "world": dist.world}})
        writer.close()
    dist.barrier()
    dist.close()
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train", help="train an avatar from a curated dataset (guest encoder, stage 1, stage 2, renderer)",
        description="Reads DATASET/manifest.jsonl (the curated format). Stage 1 trains the motion generator's "
                    "audio path, stage 2 freezes it and trains the video branch with guest-context dropout, "
                    "the renderer trains on the host's frames. Resumable (RUN/<stage>/), TensorBoard scalars in "
                    "RUN/tensorboard. Data parallel under torchrun (python -m pipeline.train.run ...).")
    parser.add_argument("dataset", type=Path, help="curated dataset folder (manifest.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="avatar checkpoint directory to write")
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory: cache, stage checkpoints, "
                        "TensorBoard (default: build/train_runs/<out name>)")
    parser.add_argument("--cache", type=Path, default=None, help="prepared-clip cache (default RUN/cache)")
    parser.add_argument("--tiny", action="store_true", help="seconds-scale smoke run (tiny networks, few steps)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"stages to run (comma-separated from {','.join(STAGES)}); skipped stages keep "
                             "what their checkpoint holds")
    for name in STAGES:
        parser.add_argument(f"--{name}-steps", type=int, default=None, help=f"steps of the {name} stage")
    parser.add_argument("--stage2-candidates", type=int, default=None, metavar="N",
                        help="train stage 2 N times (seeds) and keep the run reacting best on the val split "
                             "(the default avatar's recipe: see pipeline/train/config.py)")
    parser.add_argument("--stage2-candidate", type=int, default=None, metavar="I",
                        help="train and score only the I-th stage-2 candidate (0-based), without selecting: "
                             "candidates in parallel processes; a later call with all of them resumes them and "
                             "selects")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing the data")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for DATASET/report.json (curation writes it last)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_train)


def config_from_args(args) -> TrainConfig:
    config = tiny_train_config() if args.tiny else TrainConfig()
    config = with_steps(config, **{name: getattr(args, f"{name}_steps") for name in STAGES})
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    if args.stage2_candidates is not None:  # the configs above already hold the selection split out
        config = dataclasses.replace(config, stage2_candidates=args.stage2_candidates)
    return config


def _run_train(args) -> int:
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = set(stages) - set(STAGES)
    if unknown:
        print(f"error: unknown stage(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    if args.wait > 0:
        wait_for_dataset(args.dataset, args.wait)
    config = config_from_args(args)
    run_dir = args.run_dir or Path("build/train_runs") / args.out.name
    report = train(args.dataset, args.out, run_dir, config, stages, args.workers, args.quiet, args.cache,
                   args.stage2_candidate)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: report[k] for k in ("data", "losses", "timings_s", "parameters")}, indent=2))
        print(f"avatar: {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.train.run DATASET --out DIR ...` (what torchrun starts)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.train.run")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_parser(commands)
    args = parser.parse_args(["train", *(argv if argv is not None else sys.argv[1:])])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

