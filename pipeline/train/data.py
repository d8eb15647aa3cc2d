"""The curated dataset, read once into per-clip training arrays (cached, resumable).

For every clip of the manifest (`pipeline/curate/manifest.py`) this computes, exactly as serving
would see the same media:

Host audio -> `mel` (4N, 80). The clip's audio is the studio mix (host and guest voices) but the
gateway receives the host's voice only. The mix is gated by the diarized `host_speech` intervals
(widened by `speech_pad_s`, `gate_ramp_s` ramps), zero elsewhere, before the shared `log_mel`: the
model learns the lips from the host's voice alone and never hears the guest, whose behaviour must
come from the video. (Overlapped speech keeps whatever guest voice is under the host's.)

Host video -> canonical frames (N, F, F, 3) RGB + `host_motion` (N, 15). The curated crop window is
fixed per clip while the camera cuts, zooms and pans, so the face's position and size in the crop
jump between shots. Each frame is warped (similarity, no rotation) so that the eyes sit at the
avatar's framing (`HostFraming`) and the face has its height; the motion's tx, ty, scale become the
framing's, rotation and expressions stay as measured. The renderer learns one framing; the
generator's targets do not jump at cuts except in yaw (the camera's azimuth), where `host_segment`
breaks the sequence (a window whose history crosses a cut is not a training window).

Guest video -> per frame the crop and geometry serving computes from a partner frame
(`server/partner_input.analyse_frame`): face mesh on the frame, its landmark box, `crop_face` at the
spec's crop size, the mesh's motion vector. Black or not-visible frames are invisible (the paper's
blackout frames). When the curated meta carries the mesh boxes (`RoleTrack.face_boxes`) they are used
with its motion; otherwise the mesh runs here.

Cache: <cache>/<dataset key>/<clip_id>/{arrays.npz, host_frames.npy, guest_crops.npy}, written
atomically per clip, so an interrupted preparation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from f2f.avatar_spec import AvatarSpec
from f2f.features.face_crop import crop_face
from f2f.features.mel import log_mel
from f2f.motion import FIELD_INDEX, MOTION_DIM, neutral_vector
from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from pipeline.curate.manifest import ClipMeta, ClipRecord, read_manifest, read_meta
from pipeline.curate.work import temporary_sibling

CACHE_VERSION = 3
MEL_TAIL_FRAMES = 8  # video frames of flushed-stream mel kept after a clip's end (covers K + look-ahead)


@dataclass(frozen=True)
class HostFraming:
    """Where the host's head sits in the rendered frame (fractions of the frame)."""

    face_fraction: float = 0.5  # face height / frame height (the motion vector's `scale`)
    eye_x: float = 0.5  # mid-point between the eyes
    eye_y: float = 0.42

    def rest_motion(self) -> np.ndarray:
        """Frontal, neutral, at the framing.  # (15,)"""
        m = neutral_vector()
        m[FIELD_INDEX["tx"]] = self.eye_x - 0.5
        m[FIELD_INDEX["ty"]] = self.eye_y - 0.5
        m[FIELD_INDEX["scale"]] = self.face_fraction
        return m


@dataclass(frozen=True)
class DataConfig:
    # None: the curated host crops' median framing (`median_framing`), so that most frames are only
    # nudged into place and little of the canonical frame lies outside the crop.
    framing: HostFraming | None = None
    speech_pad_s: float = 0.08  # diarized host speech widened on both sides (lips lead and trail)
    gate_ramp_s: float = 0.02
    min_target_face_px: float = 40.0  # host face height (source pixels) below which the mesh is too coarse
    min_render_face_px: float = 90.0  # ... below which a frame is too blurry to teach the renderer
    min_crop_scale: float = 0.12  # host face height / crop: outside this range the crop is another framing
    max_crop_scale: float = 0.95
    cut_centre_jump: float = 0.25  # host box centre moves more than this x its height between frames: a cut
    cut_size_jump: float = 0.15  # relative box height change between frames: a cut
    cut_yaw_jump_deg: float = 12.0
    # Gaussian sigma (frames) of the zero-phase smoothing of the host's slow fields (head pose, smile,
    # brows, gaze) inside each continuity segment: the face mesh's frame-to-frame jitter on them is
    # several times the behaviour's own (pitch increments: 1.4 deg measured vs 0.4 true), and a model
    # that learns it wanders and nods at random. A nod (11-15 frames) keeps 90-95% of its depth.
    # Jaw, pucker and blinks are left as measured: they are fast and the mesh reads them well.
    slow_field_sigma_frames: float = 1.5
    # Slow fields smoothed with the kernel's causal half (this frame and the ones before: ~1 frame of
    # delay) instead. Zero-phase smoothing starts a nod, whose sine leaves rest at full speed, as a 3-4
    # frame ramp before it (+0.1, +0.3, +0.6 deg): the model learned to continue a nod the history already
    # shows and, sampling its own history, never started one (docs/model.md, session 21). Causally
    # smoothed, a nod's first frame is its first move (+1.1 deg).
    causal_slow_fields: tuple[str, ...] = ()

    def key(self) -> dict:
        return asdict(self)


@dataclass
class Clip:
    """One clip's arrays. N frames; `host_frames` and `guest_crops` are memory-mapped."""

    record: ClipRecord
    mel: np.ndarray  # (4(N + MEL_TAIL_FRAMES), 80) float32 log-mel of the host-gated audio (clip_mel)
    host_speaking: np.ndarray  # (N,) bool, diarized
    host_motion: np.ndarray  # (N, 15) float32 canonical (see module doc); filled where invalid
    host_valid: np.ndarray  # (N,) bool: a usable motion target
    host_segment: np.ndarray  # (N,) int32: continuity runs of valid frames, -1 where invalid
    host_render_ok: np.ndarray  # (N,) bool: sharp enough for the renderer / image metrics
    host_face_px: np.ndarray  # (N,) float32 source face height (0 where unknown)
    guest_geometry: np.ndarray  # (N, 15) float32, zeros where invisible
    guest_visible: np.ndarray  # (N,) bool
    host_frames: np.ndarray  # (N, F, F, 3) uint8 RGB canonical (zeros where invalid)
    guest_crops: np.ndarray  # (N, 3, S, S) uint8 RGB, serving's crop (zeros where invisible)
    meta: ClipMeta | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.host_motion)

    @property
    def clip_id(self) -> str:
        return self.record.clip_id


# ---------------------------------------------------------------------------------------------
# Media
# ---------------------------------------------------------------------------------------------


def decode_video(path: Path, size: int, frames: int) -> np.ndarray:
    """(frames, size, size, 3) uint8 BGR; padded with the last frame / trimmed to `frames`."""
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-an", "-vf", f"scale={size}:{size}",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    data = subprocess.run(command, capture_output=True, check=True).stdout
    video = np.frombuffer(data, np.uint8).reshape(-1, size, size, 3)
    if len(video) == 0:
        raise ValueError(f"{path}: no video frames")
    if len(video) < frames:
        video = np.concatenate([video, np.repeat(video[-1:], frames - len(video), 0)])
    return video[:frames]


def decode_audio(path: Path, frames: int) -> np.ndarray:
    """(frames * 640,) float32 16 kHz mono; zero-padded / trimmed."""
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar",
               str(AUDIO_SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    audio = np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.float32)
    out = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    out[: min(len(audio), len(out))] = audio[: len(out)]
    return out


def speech_gate(intervals: list[list[float]], samples: int, pad_s: float, ramp_s: float) -> np.ndarray:
    """(samples,) float32 in 0..1: 1 inside the widened intervals, linear ramps at their edges."""
    gate = np.zeros(samples, np.float32)
    for start, end in intervals:
        a = max(0, int(round((start - pad_s) * AUDIO_SAMPLE_RATE)))
        b = min(samples, int(round((end + pad_s) * AUDIO_SAMPLE_RATE)))
        if b > a:
            gate[a:b] = 1.0
    ramp = max(1, int(ramp_s * AUDIO_SAMPLE_RATE))
    kernel = np.ones(ramp, np.float32) / ramp
    return np.clip(np.convolve(gate, kernel, mode="same"), 0.0, 1.0)


def clip_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel of a clip's audio followed by MEL_TAIL_FRAMES frames of zeros: the rows past the clip's
    end are what a live stream gives once flushed (the first of them still overlap the last audio).
    (N * 640,) -> (4 * (N + MEL_TAIL_FRAMES), 80)"""
    return log_mel(np.concatenate([audio, np.zeros(MEL_TAIL_FRAMES * SAMPLES_PER_FRAME, np.float32)]))


def frame_mask(intervals: list[list[float]], frames: int) -> np.ndarray:
    """(frames,) bool: frame n's centre lies in one of the intervals (seconds from frame 0)."""
    centres = (np.arange(frames) + 0.5) / 25.0
    mask = np.zeros(frames, bool)
    for start, end in intervals:
        mask |= (centres >= start) & (centres < end)
    return mask


# ---------------------------------------------------------------------------------------------
# Host: canonical framing, validity, continuity
# ---------------------------------------------------------------------------------------------


def canonical_transform(motion: np.ndarray, crop_size: int, framing: HostFraming, frame_size: int) -> np.ndarray:
    """Crop-space motion (15,) -> the 2x3 similarity that puts the eyes and face size at the framing."""
    eye = np.array([(motion[FIELD_INDEX["tx"]] + 0.5) * crop_size, (motion[FIELD_INDEX["ty"]] + 0.5) * crop_size])
    face_px = max(float(motion[FIELD_INDEX["scale"]]) * crop_size, 1e-3)
    s = framing.face_fraction * frame_size / face_px
    target = np.array([framing.eye_x * frame_size, framing.eye_y * frame_size])
    return np.array([[s, 0.0, target[0] - s * eye[0]], [0.0, s, target[1] - s * eye[1]]])


def canonical_motion(motion: np.ndarray, framing: HostFraming) -> np.ndarray:
    """(..., 15) crop-space motion -> the same with tx, ty, scale at the framing."""
    out = np.array(motion, np.float32, copy=True)
    rest = framing.rest_motion()
    for name in ("tx", "ty", "scale"):
        out[..., FIELD_INDEX[name]] = rest[FIELD_INDEX[name]]
    return out


SLOW_FIELDS = ("yaw", "pitch", "roll", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "eyeLookX", "eyeLookY")


def smooth_slow_fields(motion: np.ndarray, segment: np.ndarray, sigma: float,
                       causal: tuple[str, ...] = ()) -> np.ndarray:
    """Gaussian smoothing of SLOW_FIELDS within each continuity segment (edges held): zero-phase, or for
    the fields in `causal` over this frame and the ones before only.
    motion (N, 15), segment (N,) int (-1: invalid, left as is) -> (N, 15)"""
    if set(causal) - set(SLOW_FIELDS):
        raise ValueError(f"causal smoothing applies to slow fields {SLOW_FIELDS}, got {sorted(set(causal) - set(SLOW_FIELDS))}")
    out = np.array(motion, np.float32, copy=True)
    if sigma <= 0:
        return out
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)  # kernel tap j weighs frame t - offsets[j]
    gaussian = np.exp(-0.5 * (offsets / sigma) ** 2)
    one_sided = np.where(offsets >= 0, gaussian, 0.0)
    centred, one_sided = gaussian / gaussian.sum(), one_sided / one_sided.sum()
    kernels = {name: one_sided if name in causal else centred for name in SLOW_FIELDS}
    for run in np.unique(segment[segment >= 0]):
        frames = np.flatnonzero(segment == run)
        padded = np.pad(out[frames], ((radius, radius), (0, 0)), mode="edge")  # (n + 2r, 15)
        for name, kernel in kernels.items():
            column = FIELD_INDEX[name]
            # np.convolve flips the kernel: output t sums padded[t + r - j'] * kernel[j'], i.e. frame t - offset
            out[frames, column] = np.convolve(padded[:, column], kernel, mode="valid")
    return out


def host_validity(meta: ClipMeta, config: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> valid (N,), segment (N,), render_ok (N,), source face height (N,)."""
    n = meta.num_frames
    track = meta.host
    motion, has_motion = track.motion_array()
    face_px = np.zeros(n, np.float32)
    centre = np.zeros((n, 2), np.float32)
    for i, box in enumerate(track.boxes[:n]):
        if box is not None:
            face_px[i] = box[3] - box[1]
            centre[i] = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    visible = np.array(track.visible[:n], bool)
    black = np.array(track.black[:n], bool) if len(track.black) >= n else np.zeros(n, bool)
    scale = motion[:, FIELD_INDEX["scale"]]
    valid = (visible & has_motion[:n] & ~black & (scale >= config.min_crop_scale) & (scale <= config.max_crop_scale)
             & ((face_px >= config.min_target_face_px) | (face_px == 0)))
    segment = np.full(n, -1, np.int32)
    current = -1
    for i in range(n):
        if not valid[i]:
            continue
        joined = i > 0 and valid[i - 1]
        if joined and face_px[i] > 0 and face_px[i - 1] > 0:
            height = max(face_px[i - 1], 1.0)
            joined = (np.linalg.norm(centre[i] - centre[i - 1]) <= config.cut_centre_jump * height
                      and abs(face_px[i] / height - 1.0) <= config.cut_size_jump)
        if joined:
            joined = abs(motion[i, FIELD_INDEX["yaw"]] - motion[i - 1, FIELD_INDEX["yaw"]]) <= config.cut_yaw_jump_deg
        if not joined:
            current += 1
        segment[i] = current
    render_ok = valid & (face_px >= config.min_render_face_px)
    return valid, segment, render_ok, face_px


# ---------------------------------------------------------------------------------------------
# Guest: serving's crop and geometry
# ---------------------------------------------------------------------------------------------


def guest_inputs(video_bgr: np.ndarray, meta: ClipMeta, crop_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Guest crops (N, 3, S, S) uint8, geometry (N, 15), visible (N,) as serving computes them."""
    n = len(video_bgr)
    track = meta.guest
    crops = np.zeros((n, 3, crop_size, crop_size), np.uint8)
    geometry = np.zeros((n, MOTION_DIM), np.float32)
    visible = np.zeros(n, bool)
    usable = np.array(track.visible[:n], bool)
    if len(track.black) >= n:
        usable &= ~np.array(track.black[:n], bool)
    boxes = getattr(track, "face_boxes", None) or []
    if len(boxes) >= n:  # the curator recorded the mesh boxes: its motion is the same featurizer's
        for i in np.flatnonzero(usable):
            if boxes[i] is not None and track.motion[i] is not None:
                rgb = cv2.cvtColor(video_bgr[i], cv2.COLOR_BGR2RGB)
                crops[i] = np.round(crop_face(rgb, tuple(boxes[i]), crop_size) * 255.0).astype(np.uint8)
                geometry[i] = track.motion[i]
                visible[i] = True
        return crops, geometry, visible
    from f2f.features.face_geometry import FaceGeometryFeaturizer

    # Serving tracks across a session's frames (static_images=False); so does this, per clip.
    with FaceGeometryFeaturizer(max_faces=1, static_images=False) as featurizer:
        for i in range(n):
            if not usable[i]:
                continue
            faces = featurizer(np.ascontiguousarray(video_bgr[i]))
            if not faces:
                continue
            best = max(faces, key=lambda f: f.box[2] * f.box[3])
            if best.box[2] <= 1 or best.box[3] <= 1:
                continue
            rgb = cv2.cvtColor(video_bgr[i], cv2.COLOR_BGR2RGB)
            crops[i] = np.round(crop_face(rgb, best.box, crop_size) * 255.0).astype(np.uint8)
            geometry[i] = best.motion
            visible[i] = True
    return crops, geometry, visible


# ---------------------------------------------------------------------------------------------
# One clip, and the dataset
# ---------------------------------------------------------------------------------------------


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = temporary_sibling(path)
    np.save(tmp, array)
    os.replace(tmp, path)


def prepare_clip(root: Path, record: ClipRecord, spec: AvatarSpec, config: DataConfig, out: Path) -> Path:
    """Compute and cache one clip's arrays in `out` (skipped when already complete)."""
    if (out / "arrays.npz").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    meta = read_meta(root, record)
    n, crop = meta.num_frames, meta.crop_size

    audio = decode_audio(root / record.host_video, n)
    gate = speech_gate(meta.host_speech, len(audio), config.speech_pad_s, config.gate_ramp_s)
    mel = clip_mel(audio * gate)  # (4(N + MEL_TAIL_FRAMES), 80)

    valid, segment, render_ok, face_px = host_validity(meta, config)
    motion_crop, _ = meta.host.motion_array()
    motion_crop = motion_crop[:n]
    host_motion = smooth_slow_fields(canonical_motion(motion_crop, config.framing), segment, config.slow_field_sigma_frames,
                                     tuple(config.causal_slow_fields))
    host_video = decode_video(root / record.host_video, crop, n)
    frames = np.zeros((n, spec.frame_size, spec.frame_size, 3), np.uint8)
    for i in np.flatnonzero(valid):
        matrix = canonical_transform(motion_crop[i], crop, config.framing, spec.frame_size)
        warped = cv2.warpAffine(host_video[i], matrix, (spec.frame_size, spec.frame_size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        frames[i] = warped[..., ::-1]
    del host_video

    guest_video = decode_video(root / record.guest_video, crop, n)
    crops, geometry, visible = guest_inputs(guest_video, meta, spec.crop_size)
    del guest_video

    _save_npy(out / "host_frames.npy", frames)
    _save_npy(out / "guest_crops.npy", crops)
    tmp = temporary_sibling(out / "arrays.npz")
    np.savez(tmp, mel=mel.astype(np.float32), host_speaking=frame_mask(meta.host_speech, n),
             host_motion=host_motion, host_valid=valid, host_segment=segment, host_render_ok=render_ok,
             host_face_px=face_px, guest_geometry=geometry, guest_visible=visible)
    os.replace(tmp, out / "arrays.npz")  # last: marks the clip complete
    return out


def load_clip(root: Path, record: ClipRecord, directory: Path, with_meta: bool = False) -> Clip:
    with np.load(directory / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return Clip(
        record=record,
        host_frames=np.load(directory / "host_frames.npy", mmap_mode="r"),
        guest_crops=np.load(directory / "guest_crops.npy", mmap_mode="r"),
        meta=read_meta(root, record) if with_meta else None,
        **arrays,
    )


def median_framing(root: Path, records: list[ClipRecord]) -> HostFraming:
    """The median eye position and face size of the valid host frames in these clips' crops."""
    rows = []
    for record in records:
        meta = read_meta(root, record)
        motion, has = meta.host.motion_array()
        keep = has & np.array(meta.host.visible, bool)[: len(has)]
        rows.append(motion[keep])
    motion = np.concatenate(rows) if rows else np.zeros((0, MOTION_DIM), np.float32)
    if not len(motion):
        return HostFraming()
    med = np.median(motion, axis=0)
    return HostFraming(face_fraction=round(float(med[FIELD_INDEX["scale"]]), 3),
                       eye_x=round(float(med[FIELD_INDEX["tx"]]) + 0.5, 3),
                       eye_y=round(float(med[FIELD_INDEX["ty"]]) + 0.5, 3))


def dataset_key(root: Path, spec: AvatarSpec, config: DataConfig) -> str:
    manifest = (root / "manifest.jsonl").read_bytes()
    data = {"v": CACHE_VERSION, "manifest": hashlib.sha256(manifest).hexdigest(), "root": str(root.resolve()),
            "crop_size": spec.crop_size, "frame_size": spec.frame_size, "config": config.key()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _prepare_one(args) -> str:
    root, record, spec, config, out = args
    prepare_clip(root, record, spec, config, out)
    return record.clip_id


@dataclass
class Dataset:
    clips: list[Clip]
    framing: HostFraming  # the canonical host framing the clips were prepared with
    root: Path


def load_dataset(root: str | Path, cache: str | Path, spec: AvatarSpec, config: DataConfig = DataConfig(),
                 splits: tuple[str, ...] = ("train",), workers: int = 1, quiet: bool = False,
                 with_meta: bool = False, limit: int | None = None) -> Dataset:
    """Clips of the given splits (prepared into the cache first). `limit` keeps the first clips only.
    With `config.framing` None the framing is the train split's median host framing."""
    root = Path(root)
    if not (root / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"no curated dataset at {root}: manifest.jsonl is missing")
    everything = read_manifest(root)
    records = [r for r in everything if r.split in splits]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"{root}: no clips in split(s) {', '.join(splits)}")
    if config.framing is None:
        config = dataclasses.replace(config, framing=median_framing(root, [r for r in everything if r.split == "train"]
                                                                    or everything))
    base = Path(cache) / dataset_key(root, spec, config)
    base.mkdir(parents=True, exist_ok=True)
    todo = [(root, r, spec, config, base / r.clip_id) for r in records if not (base / r.clip_id / "arrays.npz").is_file()]
    if todo:
        bar = tqdm(total=len(todo), desc=f"prepare {'+'.join(splits)}", unit="clip", disable=quiet)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_prepare_one, todo):
                    bar.update(1)
        else:
            for item in todo:
                _prepare_one(item)
                bar.update(1)
        bar.close()
    return Dataset([load_clip(root, r, base / r.clip_id, with_meta) for r in records], config.framing, root)


def dataset_summary(clips: list[Clip]) -> dict:
    frames = sum(c.num_frames for c in clips)
    return {
        "clips": len(clips),
        "frames": int(frames),
        "minutes": round(frames / 25.0 / 60.0, 2),
        "host_valid_frames": int(sum(c.host_valid.sum() for c in clips)),
        "host_render_frames": int(sum(c.host_render_ok.sum() for c in clips)),
        "host_speaking_frames": int(sum(c.host_speaking.sum() for c in clips)),
        "guest_visible_frames": int(sum(c.guest_visible.sum() for c in clips)),
        "episodes": sorted({c.record.episode for c in clips}),
    }
