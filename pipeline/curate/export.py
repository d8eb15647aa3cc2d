"""Stage 7, export of one kept clip: host and guest crops as H.264 (CRF 18) at 25 fps with 16 kHz mono
AAC, and meta.json with boxes, identities, visibility, speaking intervals and per-frame motion of both
people measured by the shared face-geometry featurizer on the exported crops.

Files are encoded under hidden temporary names and renamed; meta.json is written last, so a clip
folder with meta.json is complete and a rerun skips it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.curate.clips import ClipCandidate
from pipeline.curate.manifest import CLIP_FPS, ClipMeta, RoleTrack
from pipeline.curate.media import AUDIO_RATE, VideoInfo, encode_clip, read_audio, read_frames
from pipeline.curate.work import atomic_write_json, temporary_sibling

SAMPLES_PER_FRAME = int(AUDIO_RATE / CLIP_FPS)


def crop_square(frame: np.ndarray, window: list[float], size: int) -> np.ndarray:
    """BGR frame + [x0, y0, side] -> (size, size, 3) crop; outside the frame is black."""
    x0, y0, side = window
    scale = size / side
    matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def clip_intervals(intervals: list[list[float]], start: float, end: float) -> list[list[float]]:
    """Episode-time intervals -> those overlapping [start, end], relative to start."""
    return [[round(max(a, start) - start, 3), round(min(b, end) - start, 3)] for a, b in intervals if b > start and a < end]


class ClipExporter:
    def __init__(self, out_dir: Path, crop_size: int = 256):
        self.out_dir = out_dir
        self.crop_size = crop_size

    def folder(self, clip_id: str) -> Path:
        return self.out_dir / "clips" / clip_id

    def is_done(self, clip_id: str) -> bool:
        return (self.folder(clip_id) / "meta.json").exists()

    def export(self, info: VideoInfo, episode: str, clip: ClipCandidate, host_speech: list[list[float]],
               other_speech: list[list[float]]) -> ClipMeta:
        from f2f.features.face_geometry import FaceGeometryFeaturizer

        folder = self.folder(clip.clip_id)
        folder.mkdir(parents=True, exist_ok=True)
        size = self.crop_size
        host_frames = np.zeros((clip.frame_count, size, size, 3), np.uint8)
        guest_frames = np.zeros_like(host_frames)
        count = 0
        for n, frame in enumerate(read_frames(info.path, info.width, info.height, fps=CLIP_FPS,
                                              start_s=clip.start_s, duration_s=clip.frame_count / CLIP_FPS)):
            if n >= clip.frame_count:
                break
            host_frames[n] = crop_square(frame, clip.host_window, size)
            if clip.guest_boxes[n] is not None:  # missing guest frames stay black, marked in meta
                guest_frames[n] = crop_square(frame, clip.guest_window, size)
            count = n + 1
        if count < clip.frame_count:  # the source ended early: keep what decoded, say so in meta
            host_frames, guest_frames = host_frames[:count], guest_frames[:count]
        audio = read_audio(info.path, clip.start_s, count / CLIP_FPS) if info.has_audio else np.zeros(0, np.float32)
        audio = np.pad(audio, (0, max(0, count * SAMPLES_PER_FRAME - len(audio))))[:count * SAMPLES_PER_FRAME]
        guest_black = [clip.guest_boxes[n] is None for n in range(count)]
        with FaceGeometryFeaturizer(static_images=False) as host_mesh, \
                FaceGeometryFeaturizer(static_images=False) as guest_mesh:
            host_measured = [_measure(host_mesh, f) for f in host_frames]
            guest_measured = [(None, None) if black else _measure(guest_mesh, f)
                              for f, black in zip(guest_frames, guest_black)]
        for name, frames in (("host.mp4", host_frames), ("guest.mp4", guest_frames)):
            temporary = temporary_sibling(folder / name)
            encode_clip(temporary, frames, audio)
            temporary.replace(folder / name)
        end = clip.start_s + count / CLIP_FPS
        meta = ClipMeta(
            clip_id=clip.clip_id, episode=episode, start_time=clip.start_s, num_frames=count, fps=CLIP_FPS,
            crop_size=size,
            host=RoleTrack("host", clip.host_window, clip.host_boxes[:count],
                           [b is not None for b in clip.host_boxes[:count]], [m for m, _ in host_measured],
                           [False] * count, [b for _, b in host_measured]),
            guest=RoleTrack(clip.guest_identity, clip.guest_window, clip.guest_boxes[:count],
                            [b is not None for b in clip.guest_boxes[:count]], [m for m, _ in guest_measured],
                            guest_black, [b for _, b in guest_measured]),
            host_speech=clip_intervals(host_speech, clip.start_s, end),
            other_speech=clip_intervals(other_speech, clip.start_s, end),
        )
        atomic_write_json(folder / "meta.json", meta.to_dict())
        return meta


def _measure(featurizer, crop_bgr: np.ndarray) -> tuple[list[float] | None, list[float] | None]:
    """The face mesh on one crop: (motion vector, landmark box [x, y, w, h] in crop pixels) or Nones."""
    faces = featurizer(crop_bgr)
    if not faces:
        return None, None
    return [round(float(v), 4) for v in faces[0].motion], [round(float(v), 2) for v in faces[0].box]
