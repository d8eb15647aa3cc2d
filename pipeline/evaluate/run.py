"""`f2f evaluate CHECKPOINT --out DIR`: the avatar on the curated test split -> DIR/eval.json + plots.

Every test clip is generated as a gateway session would run it (`pipeline.train.windows.rollout`:
from a neutral history, host audio = the clip's host-gated audio, partner = the clip's guest video
through the guest encoder), for each guidance scale of the sweep and a few noise seeds (the same
noise for every scale). Then:
- reactivity (`pipeline.evaluate.reactivity`): precision / recall / F1 of responses to the synthetic
  world's guest cues, per rule and overall, and time-lagged cross-correlations;
- lip-sync: the generated frames are rendered, the face mesh measures jawOpen on them, and that is
  correlated with the ground truth's jawOpen at offsets -5..5 frames (best offset reported);
- mouth landmark distance: lip landmarks (head frame, eye spans) of rendered vs real host frames;
- identity: dlib descriptors of rendered frames vs the mean descriptor of real host frames;
- face found (face mesh) on rendered frames; PSNR / SSIM of rendered vs real canonical host frames,
  for the generated motion and for the renderer alone (real motion: reconstruction);
- per-frame compute of the exported networks (onnxruntime, batch 1).
Headline keys (the issue's acceptance): lipsync_corr, lipsync_offset_frames, reaction_f1,
reaction_f1_audio_only, identity_distance, face_detect_rate, psnr, ssim, cfg_sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from models.avatar import Avatar, load_avatar
from pipeline.evaluate import plots
from pipeline.evaluate.reactivity import RULE_NAMES, tlcc
from pipeline.evaluate.rendered import JAW, ClipFrameFigures, ClipFrames
from pipeline.evaluate.rollouts import ScoredSplit, clip_inputs, correlation, jaw_correlation, reactivity, rollout_threads
from pipeline.evaluate.workers import (EvaluationWorkers, generate_seed_task, long_session_task, measure_clip_task,
                                       rendered_jaw_task)
from pipeline.train.data import DataConfig, HostFraming

EVAL_FILE = "eval.json"
LIPSYNC_OFFSETS = np.arange(-5, 6)


@dataclass(frozen=True)
class EvalConfig:
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
    seeds: int = 3  # noise draws per scale (reactivity counts pool over them)
    # Clips rendered at every scale for the sweep's lip-sync column (all 7 test clips at 8 scales took 17 of
    # the default avatar's 25 evaluation minutes on 2 cores; 3 clips ~150 s of the one command's hour, 2 ~100 s).
    sweep_render_clips: int = 2
    # Every n-th rendered (and real) frame goes through dlib (~140 ms a descriptor): every 6th is ~460 frames
    # each side on the default test split, 4 a second of frames that change little from one to the next.
    identity_stride: int = 6
    latency_calls: int = 200  # 0: skip the per-frame compute measurement
    split: str = "test"
    max_clips: int | None = None
    threads: int = 2  # torch threads of this process (the guest features)
    # Processes that generate and measure (each one torch thread); the figures do not depend on it.
    workers: int = 2


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def data_config_of(avatar: Avatar) -> DataConfig:
    """The data settings the avatar was trained with (its notes), so evaluation prepares clips alike."""
    notes = avatar.config.notes
    stored = dict(notes.get("data", {}))
    framing = HostFraming(**(stored.pop("framing", None) or notes.get("framing") or {}))
    known = {f.name for f in dataclasses.fields(DataConfig)} - {"framing"}
    return DataConfig(framing=framing, **{k: v for k, v in stored.items() if k in known})


def offset_curve(measured: list[np.ndarray], truth: list[np.ndarray]) -> np.ndarray:
    """corr(measured[n], truth[n - d]) for d in LIPSYNC_OFFSETS (positive d: the video lags)."""
    curve = []
    for d in LIPSYNC_OFFSETS:
        a, b = [], []
        for m, t in zip(measured, truth):
            n = len(m)
            if d >= 0:
                a.append(m[d:]), b.append(t[: n - d])
            else:
                a.append(m[: n + d]), b.append(t[-d:])
        curve.append(correlation(np.concatenate(a), np.concatenate(b)))
    return np.asarray(curve)


def lipsync(measured: list[np.ndarray], truth: list[np.ndarray]) -> dict:
    curve = offset_curve(measured, truth)
    best = int(np.nanargmax(curve)) if np.isfinite(curve).any() else int(np.where(LIPSYNC_OFFSETS == 0)[0][0])
    zero = int(np.where(LIPSYNC_OFFSETS == 0)[0][0])
    return {"corr": round(float(curve[best]), 4), "offset_frames": int(LIPSYNC_OFFSETS[best]),
            "corr_at_zero": round(float(curve[zero]), 4), "curve": np.round(np.nan_to_num(curve), 4).tolist()}


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(checkpoint: Path, out: Path, dataset: Path | None = None, config: EvalConfig = EvalConfig(),
             cache: Path | None = None, quiet: bool = False) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    avatar = load_avatar(checkpoint)
    spec, notes = avatar.spec, avatar.config.notes
    dataset = Path(dataset or notes.get("dataset") or "")
    if not (dataset / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"no curated dataset at {dataset!s}: pass --data")
    cache = cache or Path("build/eval_cache")
    scored = ScoredSplit.load(dataset, cache, spec, data_config_of(avatar), config.split, config.max_clips, quiet)
    clips, truths, cues = scored.clips, scored.truths, scored.cues
    default = float(notes.get("default_lambda_video", 1.0))
    lambdas = sorted(set(config.lambdas) | {0.0, default})
    timings: dict[str, float] = {}

    with EvaluationWorkers(Path(checkpoint), config.workers, avatar) as workers:
        # 1. Generation: every clip x scale x seed, from the same noise per seed; and the long session.
        t0 = time.perf_counter()
        with rollout_threads():
            inputs = clip_inputs(avatar, clips)
        host_motion = [c.host_motion[c.host_valid] for c in clips]
        generated = workers.run([(generate_seed_task, (inputs, lambdas, seed)) for seed in range(config.seeds)]
                                + [(long_session_task, (inputs, host_motion, default, config.seeds))],
                                "generate", quiet)
        motions = {lam: [per_seed[j] for per_seed in generated[:-1]] for j, lam in enumerate(lambdas)}  # [lambda][seed][clip]
        stability = generated[-1]
        timings["generate_s"] = time.perf_counter() - t0

        # 2. Rendered frames: the default scale's clips (face mesh, lip-sync, identity, image metrics), and
        # for the sweep's lip-sync column a subset of clips at every scale (seed 0).
        t0 = time.perf_counter()
        with_real = [i for i, c in enumerate(clips) if c.host_render_ok.any()]
        clip_frames = [ClipFrames(motion=motions[default][0][i], real_index=np.flatnonzero(c.host_render_ok),
                                  real_motion=c.host_motion[c.host_render_ok], real_frames=_frames_source(c),
                                  identity_stride=config.identity_stride, keep_example=i in with_real[:6])
                       for i, c in enumerate(clips)]
        subset = list(range(min(config.sweep_render_clips, len(clips))))
        measured = workers.run([(measure_clip_task, (f,)) for f in clip_frames]
                               + [(rendered_jaw_task, (motions[lam][0][i],)) for lam in lambdas for i in subset],
                               "render", quiet)
        per_clip: list[ClipFrameFigures] = measured[:len(clips)]
        sweep_jaw = {lam: measured[len(clips) + k * len(subset):len(clips) + (k + 1) * len(subset)]
                     for k, lam in enumerate(lambdas)}
        timings["render_s"] = time.perf_counter() - t0

    # 3. Reactivity at every scale, and on the measured host motion (what the data itself shows).
    t0 = time.perf_counter()
    reactions = {lam: reactivity(motions[lam], scored) for lam in lambdas}
    measured_host = reactivity([[c.host_motion for c in clips]], scored)
    detector = {rule: {"found": sum(c.ground_truth_found[rule][0] for c in cues),
                       "reacted_and_observable": sum(c.ground_truth_found[rule][1] for c in cues)}
                for rule in RULE_NAMES}
    correlations = {"default": tlcc(motions[default][0], cues, truths), "audio_only": tlcc(motions[0.0][0], cues, truths),
                    "ground_truth": tlcc([t.host_motion for t in truths], cues, truths)}
    timings["reactivity_s"] = time.perf_counter() - t0

    truth_jaw = [t.host_motion[:, JAW] for t in truths]
    measured_jaw = [f.jaw for f in per_clip]
    found = [f.found for f in per_clip]
    examples = [f.example for f in per_clip if f.example is not None]
    lip = lipsync(measured_jaw, truth_jaw)
    reference = np.concatenate([f.reference_ids for f in per_clip])
    rendered = np.concatenate([f.rendered_ids for f in per_clip])
    centre = reference.mean(axis=0) if len(reference) else None
    identity_distance = float(np.linalg.norm(rendered - centre, axis=1).mean()) if centre is not None and len(rendered) else None
    reference_spread = float(np.linalg.norm(reference - centre, axis=1).mean()) if centre is not None else None

    def weighted(items):
        items = [(v, n) for v, n in items if v is not None and n]
        return float(np.average([v for v, _ in items], weights=[n for _, n in items])) if items else None

    def over_real_frames(name: str) -> float | None:  # a per-clip image figure, weighted by the clip's real frames
        return weighted([(getattr(f, name), f.real_frames) for f in per_clip])

    sweep = []
    for lam in lambdas:
        lip_lam = lipsync(sweep_jaw[lam], [truth_jaw[i] for i in subset])
        generated_tracks = [m for seed in motions[lam] for m in seed]
        head = np.mean([np.abs(np.diff(m[:, :3], axis=0)).mean() for m in generated_tracks])
        r = reactions[lam]
        sweep.append({
            "lambda_video": lam, "reaction_f1": r["f1"], "reaction_precision": r["precision"],
            "reaction_recall": r["recall"], "reaction_f1_per_rule": {k: v["f1"] for k, v in r["per_rule"].items()},
            "lipsync_corr": lip_lam["corr"], "lipsync_offset_frames": lip_lam["offset_frames"],
            "jaw_corr_motion": round(jaw_correlation(motions[lam], scored), 4),
            "head_rotation_deg_per_frame": round(float(head), 4),
        })

    # 5. Per-frame compute.
    latency = None
    if config.latency_calls:
        from pipeline.evaluate.latency import measure_latency

        t0 = time.perf_counter()
        latency = measure_latency(Path(checkpoint), calls=config.latency_calls)
        timings["latency_s"] = time.perf_counter() - t0

    found_all = np.concatenate(found)
    frames_total = int(sum(c.num_frames for c in clips))
    result = {
        "checkpoint": str(checkpoint), "dataset": str(dataset), "split": config.split, "clips": len(clips),
        "frames": frames_total, "episodes": sorted({c.record.episode for c in clips}),
        "lambda_video_default": default, "seeds": config.seeds,
        "lipsync_corr": lip["corr"], "lipsync_offset_frames": lip["offset_frames"],
        "lipsync_corr_at_zero_offset": lip["corr_at_zero"], "lipsync_offset_curve": dict(zip(LIPSYNC_OFFSETS.tolist(), lip["curve"])),
        "jaw_corr_motion": next(s["jaw_corr_motion"] for s in sweep if s["lambda_video"] == default),
        "mouth_landmark_distance": _round(weighted([f.mouth_distance for f in per_clip if f.mouth_distance])),
        "mouth_landmark_distance_reconstruction": _round(weighted([f.mouth_distance_reconstruction for f in per_clip
                                                                    if f.mouth_distance_reconstruction])),
        "reaction_f1": reactions[default]["f1"], "reaction_precision": reactions[default]["precision"],
        "reaction_recall": reactions[default]["recall"],
        "reaction_f1_audio_only": reactions[0.0]["f1"], "reaction_precision_audio_only": reactions[0.0]["precision"],
        "reaction_recall_audio_only": reactions[0.0]["recall"],
        "reaction_per_rule": reactions[default]["per_rule"], "reaction_per_rule_audio_only": reactions[0.0]["per_rule"],
        "reaction_f1_measured_host_motion": measured_host["f1"],
        "reaction_detector_on_ground_truth": detector,
        "tlcc": {k: {rule: {"peak_corr": v[rule]["peak_corr"], "peak_lag_s": v[rule]["peak_lag_s"]} for rule in v}
                 for k, v in correlations.items()},
        "identity_distance": _round(identity_distance), "identity_distance_reference_spread": _round(reference_spread),
        "identity_frames": {"rendered": int(len(rendered)), "reference": int(len(reference))},
        "face_detect_rate": round(float(found_all.mean()), 4),
        "psnr": _round(over_real_frames("psnr"), 2), "ssim": _round(over_real_frames("ssim")),
        "psnr_reconstruction": _round(over_real_frames("psnr_reconstruction"), 2),
        "ssim_reconstruction": _round(over_real_frames("ssim_reconstruction")),
        "cfg_sweep": sweep,
        "long_session": stability,
        "latency_ms": latency,
        "guest_match": round(float(np.mean([t.guest_match for t in truths])), 3),
        "config": asdict(config),
    }
    figures = plots.write_all(out, result, correlations, examples, clips, truths, motions, default)
    timings["total_s"] = time.perf_counter() - started
    result["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    result["plots"] = [p.name for p in figures]
    result = _finite(result)
    tmp = out / (EVAL_FILE + ".partial")
    tmp.write_text(json.dumps(result, indent=2, default=float, allow_nan=False) + "\n")
    os.replace(tmp, out / EVAL_FILE)
    return result


def _frames_source(clip) -> np.ndarray | str:
    """A clip's usable real frames for a worker: the path of its memory-mapped frame file when it has one
    (a worker reads its rows; nothing large goes through the pipe), else the frames themselves."""
    frames = clip.host_frames
    if isinstance(frames, np.memmap) and frames.filename:
        return str(frames.filename)
    return np.asarray(frames[clip.host_render_ok])


def _finite(value):
    """NaN (a correlation over constant values, nothing measured) -> None, so eval.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _round(value, digits: int = 4):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_evaluate_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="evaluate an avatar on the curated test split: eval.json + plots",
        description="Generates every test clip as a gateway session would, for a sweep of lambda_video, and "
                    "measures lip-sync (face mesh on rendered frames vs ground truth), reactivity to the "
                    "synthetic world's guest cues (precision/recall/F1, lagged cross-correlation), identity "
                    "(dlib), face detection, PSNR/SSIM and the exported networks' per-frame compute.")
    parser.add_argument("checkpoint", type=Path, help="avatar checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="folder for eval.json and the plots")
    parser.add_argument("--data", type=Path, default=None, help="curated dataset (default: the one it was trained on)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--lambdas", default=",".join(str(v) for v in EvalConfig.lambdas),
                        help="guidance scales of the sweep, comma-separated")
    parser.add_argument("--seeds", type=int, default=EvalConfig.seeds)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--sweep-render-clips", type=int, default=EvalConfig.sweep_render_clips)
    parser.add_argument("--latency-calls", type=int, default=EvalConfig.latency_calls, help="0 skips it")
    parser.add_argument("--cache", type=Path, default=None, help="prepared-clip cache (default build/eval_cache)")
    parser.add_argument("--threads", type=int, default=EvalConfig.threads)
    parser.add_argument("--workers", type=int, default=EvalConfig.workers,
                        help="processes that generate and measure (the figures do not depend on it)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> int:
    config = EvalConfig(lambdas=tuple(float(v) for v in args.lambdas.split(",") if v), seeds=args.seeds,
                        sweep_render_clips=args.sweep_render_clips, latency_calls=args.latency_calls,
                        split=args.split, max_clips=args.max_clips, threads=args.threads,
                        workers=args.workers)
    result = evaluate(args.checkpoint, args.out, args.data, config, args.cache, args.quiet)
    headline = ("lipsync_corr", "lipsync_offset_frames", "reaction_f1", "reaction_f1_audio_only", "identity_distance",
                "face_detect_rate", "psnr", "ssim")
    print(json.dumps({k: result[k] for k in headline}, indent=2))
    print(f"eval.json: {args.out / EVAL_FILE}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate.run")
    commands = parser.add_subparsers(dest="command", required=True)
    add_evaluate_parser(commands)
    args = parser.parse_args(["evaluate", *(argv if argv is not None else sys.argv[1:])])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
