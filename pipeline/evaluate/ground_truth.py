"""The synthetic world's ground truth of a curated clip: the episode JSON looked up by the clip's
episode and start time (`ClipRecord.ground_truth`, `ClipMeta.start_time`).

Per clip: the host's drawn motion per clip frame (stage space, `motion`), whether the host speaks, which
person the clip's guest track is (the ground-truth face its boxes overlap most), and that guest's cues
with the host's reaction events (`reaction_events`, `guest_cues`, `rules`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from f2f.motion import MOTION_DIM, MOTION_FIELDS
from f2f.timebase import parse_fps
from pipeline.curate.manifest import ClipMeta, ClipRecord

CUE_RULE = {"guest_pause": "nod_after_pause", "guest_smile": "smile_back", "guest_tilt": "mirror_tilt",
            "guest_speech_onset": "look_at_speaker"}


@dataclass(frozen=True)
class Rule:
    name: str
    cue: str
    lag_min_s: float
    lag_max_s: float


@dataclass
class Cue:
    rule: str
    time_s: float  # clip time (seconds from clip frame 0)
    person: str
    value: float | None = None
    reaction_s: float | None = None  # clip time of the host's response start, None: no reaction (host busy)


@dataclass
class ClipTruth:
    host_motion: np.ndarray  # (N, 15) stage-space motion as drawn
    host_speaking: np.ndarray  # (N,) bool
    guest_person: str | None
    guest_match: float  # fraction of the clip's guest boxes that matched the person
    cues: list[Cue]  # the clip guest's cues
    other_cues: list[Cue]  # every other person's cues (the host may react to them: don't-care)
    rules: dict[str, Rule] = field(default_factory=dict)


@lru_cache(maxsize=8)
def load_episode(path: str) -> dict:
    return json.loads(Path(path).read_text())


def resolve_truth_path(record: ClipRecord, dataset_root: Path) -> Path | None:
    """The episode JSON: as given when absolute; else relative to the manifest's folder (the format's
    convention), or to the working directory (where `f2f curate` ran), whichever exists."""
    if not record.ground_truth:
        return None
    path = Path(record.ground_truth)
    if path.is_absolute():
        return path
    for candidate in (dataset_root / path, Path.cwd() / path, dataset_root / path.name,
                      Path(record.source_video).parent / path.name):
        if candidate.is_file():
            return candidate
    return dataset_root / path


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def clip_truth(record: ClipRecord, meta: ClipMeta, dataset_root: Path) -> ClipTruth | None:
    """The ground truth of one clip, or None when the clip has no synthetic ground truth."""
    path = resolve_truth_path(record, dataset_root)
    if path is None or not path.is_file():
        return None
    truth = load_episode(str(path))
    fps = float(parse_fps(truth["video"]["fps"]))
    count = truth["video"]["frame_count"]
    n = meta.num_frames
    times = meta.start_time + np.arange(n) / meta.fps  # episode time of each clip frame
    frames = np.clip((times * fps + 1e-6).astype(int), 0, count - 1)
    host_id = truth["host_id"]
    motion = truth["motion"][host_id]
    host_motion = np.stack([np.asarray(motion[name], np.float32)[frames] for name in MOTION_FIELDS], axis=1)
    speaking = np.array([host_id in truth["frames"]["speaking"][f] for f in frames], bool)

    votes: dict[str, int] = {}
    boxes = 0
    for i, box in enumerate(meta.guest.boxes[:n]):
        if box is None:
            continue
        boxes += 1
        best, best_iou = None, 0.3
        for face in truth["frames"]["faces"][frames[i]]:
            x, y, w, h = face["box"]
            score = _iou(box, (x, y, x + w, y + h))
            if score > best_iou:
                best, best_iou = face["person"], score
        if best is not None and best != host_id:
            votes[best] = votes.get(best, 0) + 1
    guest = max(votes, key=votes.get) if votes else None
    match = votes.get(guest, 0) / boxes if boxes else 0.0

    rules = {r["name"]: Rule(r["name"], r["cue"], r["lag_min_s"], r["lag_max_s"]) for r in truth["rules"]}
    reactions = {(e["rule"], e["cue_person"], round(e["cue_time"], 3)): e["response_time"]
                 for e in truth["reaction_events"]}
    start, end = meta.start_time, meta.start_time + n / meta.fps
    cues, others = [], []
    for cue in truth["guest_cues"]:
        if not start <= cue["time"] < end:
            continue
        rule = CUE_RULE[cue["kind"]]
        reaction = reactions.get((rule, cue["person"], round(cue["time"], 3)))
        item = Cue(rule, cue["time"] - start, cue["person"], cue.get("value"),
                   None if reaction is None else reaction - start)
        (cues if cue["person"] == guest else others).append(item)
    return ClipTruth(host_motion, speaking, guest, match, cues, others, rules)


def empty_motion(n: int) -> np.ndarray:
    return np.zeros((n, MOTION_DIM), np.float32)
