"""A small dataset in the curated format (`pipeline/curate/manifest.py`), built from `f2f synth` ground truth.

For tests and development only, never for a shipped avatar: it skips everything curation has to work
out (detection, tracking, identity, diarization) and takes it from the synthetic world's ground truth:
- clips: consecutive segments of `clip_frames` frames; the clip's guest is the guest seen most often;
- crops: one square window per role and clip around the role's median ground-truth face box
  (`window_scale` x its size, shifted down a fifth, as the curation recipe crops), 25 fps H.264 at
  `crop_size`, with the clip's 16 kHz mono AAC audio (the studio mix, both voices);
- per frame and role: the ground-truth box (source pixels), visible when the face is visible and sits
  in the window at about the window's size (other shots' framings are "not visible"), black guest
  frames where the guest is not visible, motion in the crop's image space from the ground truth (pose
  from `frames.faces[].pose` mapped into the crop, expressions as drawn);
- host_speech / other_speech from the ground truth's speaker segments.

`build_dataset(episode_jsons, out_dir, test_episodes={...})` writes manifest.jsonl, clips/<id>/host.mp4,
guest.mp4, meta.json and a report.json (last, as curation does).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from f2f.motion import EXPRESSION_FIELDS, FIELD_INDEX, MOTION_DIM, clip_expressions
from pipeline.curate.manifest import MANIFEST_NAME, ClipMeta, ClipRecord, RoleTrack
from pipeline.curate.media import read_frames

AUDIO_RATE = 16_000


@dataclass(frozen=True)
class BuildConfig:
    clip_frames: int = 160
    crop_size: int = 256
    window_scale: float = 2.0  # window side / median face box size
    min_visible: float = 0.35  # both roles visible in at least this fraction of a clip's frames


def _decode_audio(video: Path) -> np.ndarray:
    done = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-vn", "-ac", "1", "-ar",
                           str(AUDIO_RATE), "-f", "f32le", "pipe:1"], capture_output=True, check=True)
    return np.frombuffer(done.stdout, np.float32)


def _encode(path: Path, frames: np.ndarray, audio: np.ndarray) -> None:
    """(N, S, S, 3) BGR uint8 + 16 kHz mono float audio -> H.264 CRF 18 + AAC mp4."""
    audio_file = path.with_suffix(".f32")
    audio.astype("<f4").tofile(audio_file)
    size = frames.shape[1]
    command = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{size}x{size}",
               "-framerate", "25", "-i", "pipe:0", "-f", "f32le", "-ar", str(AUDIO_RATE), "-ac", "1",
               "-i", str(audio_file), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast",
               "-crf", "18", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", str(AUDIO_RATE), "-ac", "1",
               "-shortest", str(path)]
    try:
        subprocess.run(command, input=frames.tobytes(), capture_output=True, check=True)
    finally:
        audio_file.unlink(missing_ok=True)


def _window(boxes: list[list[float]], scale: float) -> list[float]:
    """Median face box (x, y, w, h) -> square window [x0, y0, side], shifted down a fifth of the box."""
    b = np.median(np.asarray(boxes, np.float64), axis=0)
    side = scale * max(b[2], b[3])
    cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2 + 0.2 * b[3]
    return [float(cx - side / 2), float(cy - side / 2), float(side)]


def _crop(frame: np.ndarray, window: list[float], size: int) -> np.ndarray:
    x0, y0, side = window
    s = size / side
    matrix = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


def _in_window(box: list[float], window: list[float], median_size: float) -> bool:
    x, y, w, h = box
    x0, y0, side = window
    inside = x >= x0 and y >= y0 and x + w <= x0 + side and y + h <= y0 + side
    return inside and 0.7 <= max(w, h) / median_size <= 1.4


def _crop_motion(face: dict, person_motion: dict, frame: int, window: list[float], width: int, height: int) -> list:
    """Ground truth of one face in one frame -> motion vector in the crop's image space."""
    x0, y0, side = window
    pose = face["pose"]
    m = np.zeros(MOTION_DIM, np.float32)
    for name in ("yaw", "pitch", "roll"):
        m[FIELD_INDEX[name]] = pose[name]
    m[FIELD_INDEX["tx"]] = ((pose["tx"] + 0.5) * width - x0) / side - 0.5
    m[FIELD_INDEX["ty"]] = ((pose["ty"] + 0.5) * height - y0) / side - 0.5
    m[FIELD_INDEX["scale"]] = pose["scale"] * height / side
    for name in EXPRESSION_FIELDS:
        m[FIELD_INDEX[name]] = person_motion[name][frame]
    return [round(float(v), 4) for v in clip_expressions(m)]


def _intervals(segments: list[dict], keep, start: float, end: float) -> list[list[float]]:
    out = []
    for seg in segments:
        if keep(seg["person"]) and seg["end"] > start and seg["start"] < end:
            out.append([round(max(seg["start"], start) - start, 4), round(min(seg["end"], end) - start, 4)])
    return sorted(out)


def build_episode(truth_path: Path, out_dir: Path, split: str, config: BuildConfig = BuildConfig()) -> list[ClipRecord]:
    truth = json.loads(truth_path.read_text())
    video = truth_path.with_name(truth["video"]["file"])
    if truth["video"]["fps"] != "25/1":
        raise ValueError("the test dataset builder reads 25 fps episodes only")
    width, height, count = truth["video"]["width"], truth["video"]["height"], truth["video"]["frame_count"]
    host_id, episode = truth["host_id"], truth_path.stem
    faces = truth["frames"]["faces"]
    guests = [p["id"] for p in truth["people"] if p["role"] == "guest"]
    audio = _decode_audio(video)

    # Plan the clips: per segment, the guest seen most, and both roles visible often enough.
    plans = []
    for start in range(0, count - config.clip_frames + 1, config.clip_frames):
        frames = range(start, start + config.clip_frames)

        def seen(person):
            return [i for i in frames for f in faces[i] if f["person"] == person and f["visible"]]

        guest = max(guests, key=lambda g: len(seen(g)))
        if min(len(seen(host_id)), len(seen(guest))) >= config.min_visible * config.clip_frames:
            plans.append((start, guest))

    records: list[ClipRecord] = []
    frame_iter = read_frames(video, width, height)
    position = 0
    for start, guest in plans:
        while position < start:
            next(frame_iter)
            position += 1
        clip_id = f"{episode}_{start:06d}"
        clip_dir = out_dir / "clips" / clip_id
        clip_dir.mkdir(parents=True, exist_ok=True)
        frames = [next(frame_iter) for _ in range(config.clip_frames)]
        position += config.clip_frames
        tracks, crops = {}, {}
        for role, person in (("host", host_id), ("guest", guest)):
            own = [next((f for f in faces[start + i] if f["person"] == person), None) for i in range(len(frames))]
            boxes = [f["box"] for f in own if f is not None and f["visible"]]
            window = _window(boxes, config.window_scale)
            median_size = float(np.median([max(b[2], b[3]) for b in boxes]))
            visible = [f is not None and f["visible"] and _in_window(f["box"], window, median_size) for f in own]
            motion = [_crop_motion(f, truth["motion"][person], start + i, window, width, height) if v else None
                      for i, (f, v) in enumerate(zip(own, visible))]
            black = [role == "guest" and not v for v in visible]
            crop = np.stack([np.zeros((config.crop_size,) * 2 + (3,), np.uint8) if b else
                             _crop(frame, window, config.crop_size) for frame, b in zip(frames, black)])
            tracks[role] = RoleTrack(
                identity="host" if role == "host" else "guest_0", crop_window=[round(v, 2) for v in window],
                boxes=[None if f is None else [f["box"][0], f["box"][1], f["box"][0] + f["box"][2],
                                              f["box"][1] + f["box"][3]] for f in own],
                visible=visible, motion=motion, black=black)
            crops[role] = crop
        t0, t1 = start / 25.0, (start + config.clip_frames) / 25.0
        clip_audio = audio[int(round(t0 * AUDIO_RATE)):int(round(t1 * AUDIO_RATE))]
        _encode(clip_dir / "host.mp4", crops["host"], clip_audio)
        _encode(clip_dir / "guest.mp4", crops["guest"], clip_audio)
        meta = ClipMeta(
            clip_id=clip_id, episode=episode, start_time=t0, num_frames=config.clip_frames, fps=25.0,
            crop_size=config.crop_size, host=tracks["host"], guest=tracks["guest"],
            host_speech=_intervals(truth["speaker_segments"], lambda p: p == host_id, t0, t1),
            other_speech=_intervals(truth["speaker_segments"], lambda p: p != host_id, t0, t1))
        (clip_dir / "meta.json").write_text(json.dumps(meta.to_dict()))
        records.append(ClipRecord(
            clip_id=clip_id, episode=episode, split=split, source_video=str(video),
            ground_truth=str(truth_path.resolve()), start_time=t0, num_frames=config.clip_frames, fps=25.0,
            crop_size=config.crop_size, host_video=f"clips/{clip_id}/host.mp4",
            guest_video=f"clips/{clip_id}/guest.mp4", meta=f"clips/{clip_id}/meta.json"))
    frame_iter.close()
    return records


def build_dataset(episode_jsons: list[Path], out_dir: Path, test_episodes: set[str] = frozenset(),
                  config: BuildConfig = BuildConfig(), test_every: int = 0) -> Path:
    """Episodes (their ground-truth JSON paths) -> a curated-format dataset in out_dir. Returns out_dir.

    Splits by episode (`test_episodes`), as curation does; for a one-episode test dataset `test_every`
    n > 0 puts every n-th clip into the test split instead."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for path in episode_jsons:
        path = Path(path)
        records += build_episode(path, out_dir, "test" if path.stem in test_episodes else "train", config)
    if test_every:
        records = [dataclasses.replace(r, split="test" if i % test_every == test_every - 1 else "train")
                   for i, r in enumerate(records)]
    records.sort(key=lambda r: r.clip_id)
    (out_dir / MANIFEST_NAME).write_text("".join(r.to_json() + "\n" for r in records))
    (out_dir / "report.json").write_text(json.dumps({"clips": len(records), "builder": "tests.support"}))
    return out_dir


if __name__ == "__main__":  # development: python -m tests.support.curated_dataset OUT EPISODE.json... [--test STEM]
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("episodes", type=Path, nargs="+")
    parser.add_argument("--test", action="append", default=[])
    parser.add_argument("--clip-frames", type=int, default=BuildConfig.clip_frames)
    args = parser.parse_args()
    build_dataset(args.episodes, args.out, set(args.test), BuildConfig(clip_frames=args.clip_frames))
    print(args.out)
