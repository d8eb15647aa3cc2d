"""Keeping the best of several stage-2 runs by their reactions on a held-out split.

Stage 2 learns the video branch from a handful of guests, and on the same stage 1 its seed alone moved
the test episode's reaction F1 from 0.21 to 0.57 (docs/model.md). So training can run stage 2 several
times and keep the run that answers the held-out split's guest cues best: every candidate generates
that split's clips as `f2f evaluate` does (a neutral start, the avatar's default lambda, a few noise
draws) and is scored against the synthetic world's ground truth. Curated real videos carry no such
ground truth: then there is nothing to select on and only the first run trains.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from f2f.avatar_spec import AvatarSpec
from models.avatar import Avatar
from pipeline.curate.work import atomic_write_json
from pipeline.evaluate.rollouts import (ScoredSplit, clip_inputs, generate, jaw_correlation, reactivity,
                                        rollout_threads)
from pipeline.train.data import DataConfig


@dataclass(frozen=True)
class CandidateScore:
    seed: int
    reaction_f1: float
    reaction_precision: float
    reaction_recall: float
    jaw_corr_motion: float  # generated jawOpen vs ground truth: guidance must not cost the lip-sync
    per_rule_f1: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


class Stage2Selector:
    """Scores an avatar's motion generator on the clips of one held-out split."""

    def __init__(self, split_name: str, split: ScoredSplit, lambda_video: float, noise_seeds: int):
        self.split_name, self.split = split_name, split
        self.lambda_video, self.noise_seeds = lambda_video, noise_seeds

    @classmethod
    def load(cls, dataset: Path, cache: Path, spec: AvatarSpec, data_config: DataConfig, split_name: str,
             lambda_video: float, noise_seeds: int, quiet: bool = False) -> "Stage2Selector | None":
        """None (and why, on stderr) when the split has no clips with synthetic ground truth."""
        try:
            split = ScoredSplit.load(dataset, cache, spec, data_config, split_name, quiet=quiet)
        except ValueError as error:
            print(f"stage 2: nothing to select on ({error}); only its first run trains", file=sys.stderr)
            return None
        return cls(split_name, split, lambda_video, noise_seeds)

    def score(self, avatar: Avatar, seed: int) -> CandidateScore:
        """Reaction F1 of `avatar` on the split (a CPU copy generates, so training's device is untouched)."""
        scoring = copy.deepcopy(avatar).cpu().eval()
        with rollout_threads():
            inputs = clip_inputs(scoring, self.split.clips)
            tracks = generate(scoring, inputs, [self.lambda_video], self.noise_seeds)[self.lambda_video]
        reactions = reactivity(tracks, self.split)
        return CandidateScore(seed=seed, reaction_f1=reactions["f1"], reaction_precision=reactions["precision"],
                              reaction_recall=reactions["recall"],
                              jaw_corr_motion=round(jaw_correlation(tracks, self.split), 4),
                              per_rule_f1={rule: v["f1"] for rule, v in reactions["per_rule"].items()})

    def score_kept(self, avatar: Avatar, seed: int, path: Path, key: str, write: bool = True) -> CandidateScore:
        """`score`, kept in `path` under `key` (the candidate's weights and the selection settings): a resumed
        training that trains nothing new does not generate the split again (the default avatar's script
        resumes every stage in a last call that writes the avatar)."""
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("key") == key:
                return CandidateScore(**stored["score"])
        score = self.score(avatar, seed)
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"key": key, "score": score.to_dict()})
        return score


def best_candidate(scores: list[CandidateScore]) -> int:
    """Index of the highest reaction F1; ties go to the earlier seed."""
    return max(range(len(scores)), key=lambda i: (scores[i].reaction_f1, -i))
