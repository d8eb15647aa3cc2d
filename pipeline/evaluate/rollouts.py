"""Clips of one split generated as gateway sessions would run them, and their reactions scored.

Shared by `f2f evaluate` (the test split, every scale of the sweep) and by training, which keeps the best
of several stage-2 runs by their reaction F1 on the val split (`pipeline/train/run.py`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from f2f.avatar_spec import AvatarSpec
from f2f.motion import FIELD_INDEX
from models.avatar import Avatar
from pipeline.evaluate.ground_truth import ClipTruth, clip_truth
from pipeline.evaluate.reactivity import RULE_NAMES, ClipCues, Counts, clip_cues, score_clip, summarise
from pipeline.train.data import Clip, DataConfig, load_dataset
from pipeline.train.windows import ClipInputs, rollout, rollout_noise

Motions = dict[float, list[list[np.ndarray]]]  # lambda -> [seed][clip] (N, 15)


@contextmanager
def rollout_threads() -> Iterator[None]:
    """One torch thread for the body: a rollout is a chain of small batched steps, and with sleeping
    OpenMP workers (OMP_WAIT_POLICY=PASSIVE, as the training script sets) waking a second thread costs more
    than it saves. Measured on the 2-core machine, default avatar, ms per step at 1 / 2 threads: 3 rows
    17 / 54, 56 rows 194 / 194."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ScoredSplit:
    """The clips of one split that have synthetic ground truth, with the guest cues scored on them."""

    clips: list[Clip]
    truths: list[ClipTruth]
    cues: list[ClipCues]

    @classmethod
    def load(cls, dataset: Path, cache: Path, spec: AvatarSpec, data_config: DataConfig, split: str,
             limit: int | None = None, quiet: bool = False) -> "ScoredSplit":
        data = load_dataset(dataset, cache, spec, data_config, (split,), quiet=quiet, with_meta=True, limit=limit)
        pairs = [(c, clip_truth(c.record, c.meta, data.root)) for c in data.clips]
        pairs = [(c, t) for c, t in pairs if t is not None]
        if not pairs:
            raise ValueError(f"{dataset}: the {split} clips have no synthetic ground truth to evaluate against")
        clips, truths = [c for c, _ in pairs], [t for _, t in pairs]
        cues = [clip_cues(t, c.guest_visible, i) for i, (t, c) in enumerate(zip(truths, clips))]
        return cls(clips, truths, cues)


@torch.no_grad()
def guest_features(avatar: Avatar, clip: Clip, chunk: int = 256) -> np.ndarray:
    """The guest encoder's feature of every visible partner frame (serving's crop + geometry). (N, D)"""
    out = np.zeros((clip.num_frames, avatar.spec.guest_feature_dim), np.float32)
    frames = np.flatnonzero(clip.guest_visible)
    for i in range(0, len(frames), chunk):
        index = frames[i:i + chunk]
        crops = torch.from_numpy(np.asarray(clip.guest_crops[index]).astype(np.float32) / 255.0)
        out[index] = avatar.guest_encoder(crops, torch.from_numpy(clip.guest_geometry[index])).numpy()
    return out


def clip_inputs(avatar: Avatar, clips: list[Clip]) -> list[ClipInputs]:
    return [ClipInputs(c.mel, guest_features(avatar, c), c.guest_visible) for c in clips]


def generate(avatar: Avatar, inputs: list[ClipInputs], lambdas: list[float], seeds: int,
             quiet: bool = True) -> Motions:
    """Every clip at every scale for noise seeds 0..seeds-1, the same noise for every scale."""
    motions: Motions = {lam: [] for lam in lambdas}
    for seed in tqdm(range(seeds), desc="generate", unit="seed", disable=quiet):
        for lam, tracks in zip(lambdas, generate_seed(avatar, inputs, lambdas, seed)):
            motions[lam].append(tracks)
    return motions


def generate_seed(avatar: Avatar, inputs: list[ClipInputs], lambdas: list[float], seed: int) -> list[list[np.ndarray]]:
    """Every clip at every scale from noise seed `seed` (one batch of scales x clips): [lambda][clip] (N, 15)."""
    longest = max(x.num_frames for x in inputs)
    noise = rollout_noise(len(inputs), longest, avatar.spec, seed)
    batch_inputs = [x for _ in lambdas for x in inputs]
    scales = [lam for lam in lambdas for _ in inputs]
    result = rollout(avatar.motion_generator, batch_inputs, scales, np.concatenate([noise] * len(lambdas)))
    return [result[j * len(inputs):(j + 1) * len(inputs)] for j in range(len(lambdas))]


def reactivity(tracks: list[list[np.ndarray]], split: ScoredSplit) -> dict:
    """Precision / recall / F1 of the responses in `tracks` ([seed][clip] motion), pooled over seeds."""
    rules = split.truths[0].rules
    per_rule = {rule: Counts() for rule in RULE_NAMES}
    for seed_tracks in tracks:
        for motion, cues in zip(seed_tracks, split.cues):
            for rule, counts in score_clip(motion, cues, rules).items():
                per_rule[rule].add(counts)
    return summarise(per_rule)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def jaw_correlation(tracks: list[list[np.ndarray]], split: ScoredSplit) -> float:
    """Correlation of the generated jawOpen with the ground truth's, pooled over seeds and clips."""
    jaw = FIELD_INDEX["jawOpen"]
    generated = np.concatenate([m[:, jaw] for seed in tracks for m in seed])
    truth = np.concatenate([t.host_motion[:, jaw] for _ in tracks for t in split.truths])
    return correlation(generated, truth)
