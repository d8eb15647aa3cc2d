"""Stage 4, identity tracking and assignment at 25 fps inside the two-person segments.

Each 25 fps frame reuses stage 1's detections and track ids (the nearest source frame), so a face
is detected once. Each track is embedded on up to `embeds_per_track` evenly spread frames and
judged by the host face model's vote; the track's majority decides every frame of it (a single
frame's embedding of a turned face can be wrong, a track's majority rarely is). Non-host tracks
are clustered online by nearest neighbour (same person when their mean embeddings are within the
host model's tau), so guest ids stay consistent within a clip across cuts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pipeline.curate.host_face import HostFaceModel
from pipeline.curate.manifest import CLIP_FPS
from pipeline.curate.media import VideoInfo, read_frames
from pipeline.curate.tracking import DetectionTable
from pipeline.curate.vetting import Segment


@dataclass
class FaceObservation:
    """One assigned face in one 25 fps frame."""

    role: str            # "host" or a guest id ("guest_0", ...)
    box: list[float]     # x0, y0, x1, y1 source pixels
    track: int


@dataclass
class SegmentIdentities:
    start_s: float
    frame_count: int                       # 25 fps frames
    frames: list[list[FaceObservation]]    # per 25 fps frame
    track_roles: dict[str, str]            # track id -> role
    track_host_votes: dict[str, float]     # track id -> mean host vote share

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SegmentIdentities":
        frames = [[FaceObservation(**face) for face in faces] for faces in data["frames"]]
        return cls(data["start_s"], data["frame_count"], frames, data["track_roles"], data["track_host_votes"])


def source_frame_of(start_s: float, n: int, fps: float, frame_count: int) -> int:
    """The source frame shown at 25 fps frame n of a span starting at start_s."""
    return min(int(np.floor((start_s + n / CLIP_FPS) * fps + 1e-6)), frame_count - 1)


class IdentityAssigner:
    def __init__(self, model: HostFaceModel, embedder, embeds_per_track: int = 8):
        self.model = model
        self.embedder = embedder
        self.embeds_per_track = embeds_per_track

    def run(self, info: VideoInfo, table: DetectionTable, segment: Segment) -> SegmentIdentities:
        fps = info.fps_float
        rows_of_frame = table.rows_of_frame()
        count = int(np.floor(segment.duration_s * CLIP_FPS))
        rows = [rows_of_frame[source_frame_of(segment.start_s, n, fps, table.frame_count)] for n in range(count)]
        # Which 25 fps frames each track appears in, and which of them to embed.
        appearances: dict[int, list[tuple[int, int]]] = {}
        for n, frame_rows in enumerate(rows):
            for row in frame_rows:
                appearances.setdefault(int(table.track[row]), []).append((n, int(row)))
        wanted: dict[int, list[tuple[int, int]]] = {}
        for track, seen in appearances.items():
            picks = np.unique(np.linspace(0, len(seen) - 1, min(self.embeds_per_track, len(seen))).round().astype(int))
            for i in picks:
                n, row = seen[i]
                wanted.setdefault(n, []).append((track, row))
        embeddings: dict[int, list[np.ndarray]] = {track: [] for track in appearances}
        for n, frame in enumerate(read_frames(info.path, info.width, info.height, fps=CLIP_FPS,
                                              start_s=segment.start_s, duration_s=count / CLIP_FPS)):
            for track, row in wanted.get(n, []):
                try:
                    embeddings[track].append(self.embedder(frame, table.boxes[row]))
                except (RuntimeError, ValueError):
                    continue  # an unembeddable face (too small, off the edge): the track's others vote
        frames_of = {track: {n for n, _ in seen} for track, seen in appearances.items()}
        roles, votes = self._roles(embeddings, frames_of)
        frames = [[FaceObservation(roles[int(table.track[row])], [round(float(v), 1) for v in table.boxes[row]],
                                   int(table.track[row])) for row in frame_rows] for frame_rows in rows]
        return SegmentIdentities(segment.start_s, count, frames, {str(k): v for k, v in roles.items()},
                                 {str(k): round(v, 3) for k, v in votes.items()})

    def _roles(self, embeddings: dict[int, list[np.ndarray]],
               frames_of: dict[int, set[int]]) -> tuple[dict[int, str], dict[int, float]]:
        roles: dict[int, str] = {}
        votes: dict[int, float] = {}
        dimension = self.model.references.shape[1]
        for track in embeddings:
            vectors = np.array(embeddings[track]).reshape(-1, dimension)
            votes[track] = float(np.mean(self.model.is_host(vectors))) if len(vectors) else 0.0
        # The host is one person: of host-voted tracks that share a frame, the stronger vote keeps
        # the role and the other is somebody else.
        host_frames: set[int] = set()
        for track in sorted(votes, key=lambda t: (-votes[t], t)):
            if votes[track] > 0.5 and not (frames_of[track] & host_frames):
                roles[track] = "host"
                host_frames |= frames_of[track]
        guests: list[np.ndarray] = []  # mean embedding per guest id
        for track in sorted(embeddings):
            if track in roles:
                continue
            vectors = np.array(embeddings[track]).reshape(-1, dimension)
            if len(vectors) == 0:
                roles[track] = "unknown"
                continue
            mean = vectors.mean(0)
            mean /= np.linalg.norm(mean) + 1e-8
            similarity = [float(mean @ g) for g in guests]
            if similarity and max(similarity) >= self.model.threshold:
                roles[track] = f"guest_{int(np.argmax(similarity))}"
            else:
                roles[track] = f"guest_{len(guests)}"
                guests.append(mean)
        return roles, votes
