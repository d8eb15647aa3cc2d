"""The two small labelled sets of the recipe: host / not-host voice segments and face crops.

Labels live in OUT_DIR/labels/ (voice.json, faces.json: key -> true/false). They come from the
labelling page (`f2f curate label OUT_DIR`), from a folder of host crops (faces only), or, for the
synthetic world, from its ground truth (--labels-from-ground-truth). The candidates to label are
written beside them (voice_candidates.json, faces/*.jpg + face_candidates.json) by the pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.curate.work import atomic_write_json


class NeedsLabels(RuntimeError):
    """The run cannot go on until a person labels candidates on the labelling page."""


@dataclass
class LabelStore:
    folder: Path

    def __post_init__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "faces").mkdir(exist_ok=True)

    def _path(self, kind: str) -> Path:
        return self.folder / f"{kind}.json"

    def labels(self, kind: str) -> dict[str, bool]:
        path = self._path(kind)
        return json.loads(path.read_text()) if path.exists() else {}

    def set_label(self, kind: str, key: str, value: bool) -> None:
        labels = self.labels(kind)
        labels[key] = bool(value)
        atomic_write_json(self._path(kind), labels)

    def save_labels(self, kind: str, labels: dict[str, bool]) -> None:
        atomic_write_json(self._path(kind), labels)

    def candidates(self, kind: str) -> list[dict]:
        path = self.folder / f"{kind}_candidates.json"
        return json.loads(path.read_text()) if path.exists() else []

    def save_candidates(self, kind: str, candidates: list[dict]) -> None:
        atomic_write_json(self.folder / f"{kind}_candidates.json", candidates)


def sample_keys(keys: list[str], share: float, minimum: int, seed: int) -> list[str]:
    """The share of keys a person labels (at least `minimum`), drawn reproducibly."""
    count = min(len(keys), max(minimum, int(round(share * len(keys)))))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(keys, count, replace=False).tolist()) if count else []
