"""The curated dataset format: what `f2f curate` writes and what training and evaluation read.

Layout of a curated dataset folder (OUT_DIR):
    manifest.jsonl            one ClipRecord per line, sorted by clip_id
    clips/<clip_id>/host.mp4  host crop, H.264 CRF 18, 25 fps, crop_size², + 16 kHz mono AAC (the mix)
    clips/<clip_id>/guest.mp4 guest crop, same; black frames where the guest is missing
    clips/<clip_id>/meta.json ClipMeta
    report.json, dataset_card.md, clip_lengths.png, work/ (per-episode stage state, resumable)

Frame n of a clip is at episode time start_time + n / 25. Boxes are [x0, y0, x1, y1] in source-video
pixels; motion vectors follow f2f.motion.MOTION_FIELDS, measured by the shared face-geometry
featurizer on the exported crop frames (image space of the crop), None where no face was found.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from f2f.motion import MOTION_DIM

MANIFEST_NAME = "manifest.jsonl"
CLIP_FPS = 25.0
GUEST_WINDOW_FRAMES = 64   # the guest-context window at the start of a clip (paper, Section 4)
HOST_WINDOW_FRAMES = 81    # the host-response window that follows it
MIN_CLIP_FRAMES = GUEST_WINDOW_FRAMES + HOST_WINDOW_FRAMES
SPLITS = ("train", "val", "test")


@dataclass
class ClipRecord:
    """One line of manifest.jsonl. Paths are relative to the manifest's folder."""

    clip_id: str
    episode: str             # episode stem, e.g. "episode_000"; splits never share an episode
    split: str               # train | val | test
    source_video: str        # the raw episode file as given to `f2f curate`
    ground_truth: str | None  # the synthetic world's episode JSON beside it, when present
    start_time: float        # seconds on the episode timeline of clip frame 0
    num_frames: int
    fps: float
    crop_size: int
    host_video: str
    guest_video: str
    meta: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> "ClipRecord":
        return cls(**json.loads(line))


@dataclass
class RoleTrack:
    """One role (host or guest) over the clip's frames."""

    identity: str                          # "host", or the clip-local guest id ("guest_0", ...)
    crop_window: list[float]               # [x0, y0, side] of the square crop, source pixels
    boxes: list[list[float] | None]        # per frame [x0, y0, x1, y1] or None (not detected)
    visible: list[bool]                    # per frame: the role's face was detected and assigned
    motion: list[list[float] | None]       # per frame MOTION_FIELDS on the crop, or None
    black: list[bool] = field(default_factory=list)  # per frame: exported as a black frame
    # Optional (training reads it when present, else runs the mesh itself): per frame the face-mesh
    # landmarks' box [x, y, w, h] in crop pixels, where `motion` was measured, or None. It is the box
    # serving crops a partner face by (f2f.features.face_crop.crop_face), so training crops the same.
    face_boxes: list[list[float] | None] = field(default_factory=list)

    def motion_array(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, MOTION_DIM) float32 with NaN rows filled by the previous valid row, and (N,) bool valid."""
        values = np.zeros((len(self.motion), MOTION_DIM), np.float32)
        valid = np.array([m is not None for m in self.motion], bool)
        last = None
        for n, vector in enumerate(self.motion):
            if vector is not None:
                last = np.asarray(vector, np.float32)
            if last is not None:
                values[n] = last
        first = int(np.argmax(valid)) if valid.any() else len(valid)
        if 0 < first < len(valid):
            values[:first] = values[first]
        return values, valid


@dataclass
class ClipMeta:
    """clips/<clip_id>/meta.json."""

    clip_id: str
    episode: str
    start_time: float
    num_frames: int
    fps: float
    crop_size: int
    host: RoleTrack
    guest: RoleTrack
    host_speech: list[list[float]]    # [start, end] seconds relative to clip frame 0 (diarized)
    other_speech: list[list[float]]   # other speakers' speech, same convention
    audio_sample_rate: int = 16000

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClipMeta":
        data = dict(data)
        data["host"] = RoleTrack(**data["host"])
        data["guest"] = RoleTrack(**data["guest"])
        return cls(**data)


def read_manifest(path: str | Path) -> list[ClipRecord]:
    """Clip records of a manifest.jsonl (or of the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    with open(path) as stream:
        return [ClipRecord.from_json(line) for line in stream if line.strip()]


def read_meta(dataset_dir: str | Path, record: ClipRecord) -> ClipMeta:
    with open(Path(dataset_dir) / record.meta) as stream:
        return ClipMeta.from_dict(json.load(stream))
