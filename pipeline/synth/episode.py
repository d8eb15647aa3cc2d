"""One synthetic talk-show episode: cast, audio script, behaviour, shots, frames -> MP4 + ground truth.

Frames are rendered one at a time and piped to ffmpeg (H.264 + AAC), so memory stays flat however
long the episode is. Outputs are written under temporary names and renamed when complete, so an
interrupted run leaves no half-written episode and a rerun redoes only what is missing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from f2f.motion import FIELD_INDEX, MOTION_FIELDS, POSE_FIELDS, neutral_vector

from .behaviour import RULES, BehaviourModel, BehaviourResult, smooth_noise
from .camera import Shot, ShotPlanner
from .style import style_named
from .cast import HOST_ID, Person, build_cast
from .face_drawing import FacePainter
from .script import AudioScript, CastMember, build_audio_script
from .speech import EspeakSynthesizer
from .stage import FACE_HEIGHT_M, StudioSet, audience_seats, seats_for, world_to_image

SCHEMA_VERSION = 1
AUDIENCE_SIZE = 18
GENERATOR_VERSION = "2"


@dataclass(frozen=True)
class SynthConfig:
    minutes: float
    seed: int
    fps: Fraction = Fraction(25)
    size: tuple[int, int] = (1280, 720)
    crf: int = 20
    style: str = "broadcast"  # pipeline.synth.style: how the series is cast, written and shot

    def generator_json(self, index: int) -> dict:
        extra = {} if self.style == "broadcast" else {"style": self.style}  # broadcast series predate styles
        return {
            "name": "f2f synth",
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "episode_index": index,
            "minutes": self.minutes,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "size": list(self.size),
            **extra,
        }


@dataclass(frozen=True)
class EpisodeFiles:
    video: Path
    ground_truth: Path


def episode_files(out_dir: Path, index: int) -> EpisodeFiles:
    stem = f"episode_{index:03d}"
    return EpisodeFiles(out_dir / f"{stem}.mp4", out_dir / f"{stem}.json")


def is_complete(files: EpisodeFiles, config: SynthConfig, index: int) -> bool:
    """True when a previous run already wrote this episode with the same settings."""
    if not (files.video.exists() and files.ground_truth.exists()):
        return False
    try:
        with open(files.ground_truth) as f:
            return json.load(f).get("generator") == config.generator_json(index)
    except (OSError, ValueError):
        return False


def _r(value: float, decimals: int = 3) -> float:
    return round(float(value), decimals)


class VideoWriter:
    """Pipes BGR frames into ffmpeg; muxes the audio mix; H.264 (yuv420p) + AAC in MP4."""

    def __init__(self, path: Path, size: tuple[int, int], fps: Fraction, audio: np.ndarray,
                 audio_rate: int, crf: int):
        self.path = path
        self.partial = path.with_name(path.stem + ".partial.mp4")
        self.audio_file = path.with_name(path.stem + ".audio.f32")
        audio.astype("<f4").tofile(self.audio_file)
        width, height = size
        rate = f"{fps.numerator}/{fps.denominator}"
        command = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "pipe:0",
            "-f", "f32le", "-ar", str(audio_rate), "-ac", "1", "-i", str(self.audio_file),
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-r", rate,
            "-c:a", "aac", "-b:a", "128k", "-ar", "48000",
            "-movflags", "+faststart", "-f", "mp4", str(self.partial),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        self.process.stdin.write(frame.tobytes())

    def close(self) -> None:
        self.process.stdin.close()
        error = self.process.stderr.read().decode(errors="replace")
        code = self.process.wait()
        self.audio_file.unlink(missing_ok=True)
        if code != 0:
            self.partial.unlink(missing_ok=True)
            raise RuntimeError(f"ffmpeg failed ({code}) writing {self.path}: {error.strip()}")
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.process.kill()
        self.process.wait()
        self.partial.unlink(missing_ok=True)
        self.audio_file.unlink(missing_ok=True)


class EpisodeGenerator:
    """Generates episode `index` of a seeded series."""

    def __init__(self, config: SynthConfig, studio: StudioSet | None = None,
                 synthesizer: EspeakSynthesizer | None = None):
        self.config = config
        self.studio = studio or StudioSet()
        self.synth = synthesizer or EspeakSynthesizer()

    # -- planning (pure, deterministic) ----------------------------------------------------------
    def plan(self, index: int) -> "EpisodePlan":
        config = self.config
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, index]))
        style = style_named(config.style)
        guest_count = int(rng.choice([1, 2, 3], p=list(style.guest_count_weights)))
        cast = build_cast(rng, guest_count, AUDIENCE_SIZE)
        stage_people = [p for p in cast if p.role != "audience"]
        duration = config.minutes * 60.0
        script = build_audio_script(
            [CastMember(p.person_id, p.role, p.voice) for p in stage_people], duration, rng, self.synth, style)
        frame_count = int(Fraction(duration).limit_denominator(1000) * config.fps)
        times = np.arange(frame_count, dtype=np.float64) / float(config.fps)
        seats = seats_for([p.person_id for p in stage_people if p.role == "guest"], HOST_ID)
        behaviour = BehaviourModel(seats, script, times, rng, style).build()
        speaker_at = _speaker_per_frame(behaviour, frame_count)
        music = [s for s in script.non_speech if s.kind == "music"]
        show_start = max((s.end_s for s in music if s.start_s < 1.0), default=0.0)
        show_end = min((s.start_s for s in music if s.start_s > duration / 2), default=duration)
        shots = ShotPlanner(seats, config.size, float(config.fps), rng, style).plan(frame_count, speaker_at, show_start, show_end)
        audience = [p for p in cast if p.role == "audience"]
        audience_places = audience_seats(len(audience), rng)
        audience_motion = _audience_motion(rng, len(audience), times, script)
        return EpisodePlan(index, cast, script, times, seats, behaviour, shots, audience_places, audience_motion)

    # -- rendering ---------------------------------------------------------------------------------
    def generate(self, out_dir: Path, index: int, progress: bool = True) -> EpisodeFiles:
        files = episode_files(out_dir, index)
        plan = self.plan(index)
        renderer = FrameRenderer(plan, self.studio, self.config.size)
        writer = VideoWriter(files.video, self.config.size, self.config.fps, plan.script.audio,
                             plan.script.sample_rate, self.config.crf)
        faces_per_frame = []
        try:
            for frame_index in tqdm(range(len(plan.times)), desc=f"episode {index:03d}", unit="frame",
                                    disable=not progress, leave=False):
                frame, faces = renderer.render(frame_index)
                faces_per_frame.append(faces)
                writer.write(frame)
        except BaseException:
            writer.abort()
            raise
        writer.close()
        truth = ground_truth(plan, self.config, renderer.shot_of_frame.tolist(), faces_per_frame, files.video.name)
        tmp = files.ground_truth.with_suffix(".json.tmp")
        with open(tmp, "w") as f:
            json.dump(truth, f, separators=(",", ":"), sort_keys=False)
        os.replace(tmp, files.ground_truth)
        return files


@dataclass
class EpisodePlan:
    index: int
    cast: list[Person]
    script: AudioScript
    times: np.ndarray  # (F,)
    seats: list
    behaviour: BehaviourResult
    shots: list[Shot]
    audience_places: list[tuple[float, float]]
    audience_motion: np.ndarray  # (A, F, MOTION_DIM)


def _speaker_per_frame(behaviour: BehaviourResult, frame_count: int) -> list[str | None]:
    speakers: list[str | None] = []
    ids = list(behaviour.speaking)
    for i in range(frame_count):
        talking = [pid for pid in ids if behaviour.speaking[pid][i]]
        speakers.append(talking[0] if talking else None)
    return speakers


def _audience_motion(rng: np.random.Generator, count: int, times: np.ndarray, script: AudioScript) -> np.ndarray:
    """Audience faces: small head movements; smiles and open mouths while applauding or laughing."""
    frames = len(times)
    fps = 1.0 / float(times[1] - times[0]) if frames > 1 else 25.0
    cheer = np.zeros(frames)
    for seg in script.non_speech:
        if seg.kind == "applause":
            cheer[(times >= seg.start_s) & (times < seg.end_s)] = 1.0
    for seg in script.segments:
        if seg.kind == "laugh":
            cheer[(times >= seg.start_s) & (times < seg.end_s)] = 1.0
    motion = np.tile(neutral_vector(), (count, frames, 1)).astype(np.float32)
    for k in range(count):
        motion[k, :, FIELD_INDEX["yaw"]] = rng.uniform(-15, 15) + smooth_noise(rng, frames, 2 * fps, 4.0)
        motion[k, :, FIELD_INDEX["pitch"]] = rng.uniform(-6, 6) + smooth_noise(rng, frames, 2 * fps, 3.0)
        motion[k, :, FIELD_INDEX["roll"]] = smooth_noise(rng, frames, 2 * fps, 3.0)
        smile = np.clip(cheer * rng.uniform(0.5, 1.0) + smooth_noise(rng, frames, fps, 0.15), 0, 1)
        motion[k, :, FIELD_INDEX["mouthSmileLeft"]] = smile
        motion[k, :, FIELD_INDEX["mouthSmileRight"]] = smile
        motion[k, :, FIELD_INDEX["jawOpen"]] = np.clip(cheer * rng.uniform(0.1, 0.5), 0, 1)
    return motion


class FrameRenderer:
    """Draws frame i of a plan and reports every face in it (the per-frame ground truth)."""

    def __init__(self, plan: EpisodePlan, studio: StudioSet, size: tuple[int, int]):
        self.plan = plan
        self.studio = studio
        self.size = size
        self.people = {p.person_id: p for p in plan.cast}
        self.painters = {p.person_id: FacePainter(p.identity) for p in plan.cast if p.role != "audience"}
        self.small_painters = {p.person_id: FacePainter(p.identity, mesh_rows=14, mesh_cols=18) for p in plan.cast}
        self._shoulders: dict[int, tuple] = {}
        self.shot_of_frame = np.zeros(len(plan.times), np.int32)
        for shot in plan.shots:
            self.shot_of_frame[shot.start_frame:shot.end_frame] = shot.index

    def render(self, i: int) -> tuple[np.ndarray, list[dict]]:
        shot = self.plan.shots[self.shot_of_frame[i]]
        window = shot.window_at(i)
        to_image = world_to_image(window, self.size)
        px_per_m = to_image[0, 0]
        frame = self.studio.background(window, self.size, audience=shot.kind == "audience")
        faces: list[dict] = []
        if shot.kind == "audience":
            for k, person in enumerate(p for p in self.plan.cast if p.role == "audience"):
                x, y = self.plan.audience_places[k]
                motion = self.plan.audience_motion[k, i]
                face_px = FACE_HEIGHT_M * 0.95 * px_per_m
                faces += self._draw(frame, person.person_id, motion, (x, y), face_px, 0.0, to_image, small=True)
        elif shot.kind != "stage":
            for seat in self.plan.seats:
                track = self.plan.behaviour.tracks[seat.person_id][i]
                head = (seat.x + track[FIELD_INDEX["tx"]] * FACE_HEIGHT_M, seat.head_y + track[FIELD_INDEX["ty"]] * FACE_HEIGHT_M)
                face_px = FACE_HEIGHT_M * px_per_m * track[FIELD_INDEX["scale"]]
                faces += self._draw(frame, seat.person_id, track, head, face_px, shot.azimuth_deg, to_image,
                                    small=face_px < 60)
            self.studio.draw_foreground(frame, window)
            if shot.kind == "reverse":
                self._foreground_shoulder(frame, shot.foreground_side)
                self._mark_occluded(faces, shot.foreground_side)
        return frame, faces

    def _mark_occluded(self, faces: list[dict], side: int) -> None:
        """Faces behind the out-of-focus shoulder: how much of the box it covers; hidden past 30%."""
        _, alpha, x0, x1 = self._shoulders[side]
        height = alpha.shape[0]
        for face in faces:
            x, y, w, h = face["box"]
            fx0, fx1 = int(max(x, x0)), int(min(x + w, x1))
            fy0, fy1 = int(max(y, 0)), int(min(y + h, height))
            covered = 0.0
            if fx1 > fx0 and fy1 > fy0:
                covered = float(alpha[fy0:fy1, fx0 - x0:fx1 - x0].sum()) / max(w * h, 1e-6)
            face["occluded_fraction"] = _r(min(covered, 1.0), 3)
            face["visible"] = bool(face["visible"] and covered < 0.3)

    def _draw(self, frame, person_id, stage_motion, head_world, face_px, azimuth, to_image, small) -> list[dict]:
        width, height = self.size
        eye_px = to_image[:, :2] @ np.asarray(head_world) + to_image[:, 2]
        if face_px < 6 or not (-face_px * 2 < eye_px[0] < width + face_px * 2 and -face_px * 2 < eye_px[1] < height + face_px * 3):
            return []
        motion = np.array(stage_motion, dtype=np.float32)
        motion[FIELD_INDEX["yaw"]] -= azimuth
        painter = self.small_painters[person_id] if small else self.painters[person_id]
        pivot = eye_px + np.array([0.0, 0.32 * face_px])
        drawn = painter.draw(frame, motion, tuple(pivot), face_px)
        x, y, w, h = drawn.box
        inside_w = max(0.0, min(x + w, width) - max(x, 0.0))
        inside_h = max(0.0, min(y + h, height) - max(y, 0.0))
        inside = inside_w * inside_h / max(w * h, 1e-6)
        if inside <= 0:
            return []
        pose = {
            "yaw": _r(motion[FIELD_INDEX["yaw"]], 2),
            "pitch": _r(motion[FIELD_INDEX["pitch"]], 2),
            "roll": _r(motion[FIELD_INDEX["roll"]], 2),
            "tx": _r(drawn.eye_center[0] / width - 0.5, 4),
            "ty": _r(drawn.eye_center[1] / height - 0.5, 4),
            "scale": _r(face_px / height, 4),
        }
        return [{
            "person": person_id,
            "box": [_r(x, 1), _r(y, 1), _r(w, 1), _r(h, 1)],
            "face_height_px": _r(face_px, 1),
            "inside_fraction": _r(inside, 3),
            "occluded_fraction": 0.0,
            "visible": bool(drawn.visible and inside >= 0.5),
            "pose": pose,
        }]

    def _foreground_shoulder(self, frame: np.ndarray, side: int) -> None:
        """The speaker's back and shoulder, out of focus, at the frame's edge (over-the-shoulder)."""
        if side not in self._shoulders:
            self._shoulders[side] = _shoulder_layer(self.size, side)
        colour, alpha, x0, x1 = self._shoulders[side]
        region = frame[:, x0:x1]
        region[:] = (colour * alpha + region * (1.0 - alpha)).astype(np.uint8)


def _shoulder_layer(size: tuple[int, int], side: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Colour and alpha of an out-of-focus head and shoulder at one edge, cropped to where it shows."""
    width, height = size
    cx = int(width * (0.02 if side < 0 else 0.98))
    colour = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for centre, axes, bgr in (((cx, int(height * 0.95)), (int(width * 0.2), int(height * 0.55)), (35, 30, 30)),
                              ((cx, int(height * 0.38)), (int(width * 0.09), int(height * 0.2)), (25, 30, 40))):
        cv2.ellipse(colour, centre, axes, 0, 0, 360, bgr, -1)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    sigma = max(width / 80, 2)
    alpha = cv2.GaussianBlur(mask, (0, 0), sigma).astype(np.float32) / 255.0
    colour = cv2.GaussianBlur(colour, (0, 0), sigma).astype(np.float32) / np.maximum(alpha[..., None], 1e-3)
    columns = np.flatnonzero(alpha.max(axis=0) > 1e-3)
    x0, x1 = int(columns.min()), int(columns.max()) + 1
    return colour[:, x0:x1], alpha[:, x0:x1, None], x0, x1


def ground_truth(plan: EpisodePlan, config: SynthConfig, shot_of_frame: list[int], faces_per_frame: list[list[dict]],
                 video_name: str) -> dict:
    times = plan.times
    script = plan.script
    stage_ids = [p.person_id for p in plan.cast if p.role != "audience"]
    speaking = [[pid for pid in stage_ids if plan.behaviour.speaking[pid][i]] for i in range(len(times))]
    motion = {
        pid: {name: [_r(v, 4) for v in plan.behaviour.tracks[pid][:, FIELD_INDEX[name]]] for name in MOTION_FIELDS}
        for pid in stage_ids
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": config.generator_json(plan.index),
        "video": {
            "file": video_name,
            "fps": f"{config.fps.numerator}/{config.fps.denominator}",
            "frame_count": len(times),
            "width": config.size[0],
            "height": config.size[1],
            "duration_s": _r(len(times) / float(config.fps), 4),
            "audio_sample_rate": 48000,
        },
        "host_id": HOST_ID,
        "people": [p.to_json() for p in plan.cast],
        "motion_fields": list(MOTION_FIELDS),
        "pose_fields": list(POSE_FIELDS),
        "rules": [
            {"name": r.name, "cue": r.cue, "response": r.response, "lag_min_s": r.lag_min_s,
             "lag_max_s": r.lag_max_s, "description": r.description}
            for r in RULES.values()
        ],
        "speaker_segments": [
            {"person": s.person_id, "start": _r(s.start_s, 4), "end": _r(s.end_s, 4), "kind": s.kind,
             "text": s.text, "turn": s.turn_index, "overlaps_previous": bool(s.overlaps_previous)}
            for s in script.segments
        ],
        "turns": [
            {"index": t.index, "person": t.person_id, "start": _r(t.start_s, 4), "end": _r(t.end_s, 4),
             "overlaps_previous": bool(t.overlaps_previous)}
            for t in script.turns
        ],
        "music_segments": [{"start": _r(s.start_s, 4), "end": _r(s.end_s, 4)} for s in script.non_speech if s.kind == "music"],
        "non_speech_segments": [{"kind": s.kind, "start": _r(s.start_s, 4), "end": _r(s.end_s, 4)} for s in script.non_speech],
        "shots": [shot.to_json() for shot in plan.shots],
        "reaction_events": [e.to_json() for e in plan.behaviour.events],
        "guest_cues": [{k: (_r(v, 4) if isinstance(v, float) else v) for k, v in cue.items()}
                       for cue in plan.behaviour.guest_cues],
        "frames": {
            "time": [_r(t, 4) for t in times],
            "shot": shot_of_frame,
            "speaking": speaking,
            "faces": faces_per_frame,
        },
        "motion_space": "stage: yaw/pitch/roll seen from the front camera (azimuth 0); tx/ty head offset in face "
                        "heights from the seat; scale = lean factor. Image-space poses are in frames.faces[].pose.",
        "motion": motion,
    }


def generate_series(out_dir: Path, episodes: int, config: SynthConfig, progress: bool = True,
                    workers: int = 1) -> list[EpisodeFiles]:
    """Generate episodes 0..N-1 into `out_dir`, skipping the ones a previous run completed.

    Each episode is seeded by (config.seed, index) alone, so `workers` > 1 (episodes rendered in parallel
    processes) writes the same files as one worker.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [episode_files(out_dir, index) for index in range(episodes)]
    todo = [index for index in range(episodes) if not is_complete(written[index], config, index)]
    bar = tqdm(total=episodes, initial=episodes - len(todo), desc="episodes", unit="episode", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        generator: EpisodeGenerator | None = None
        for index in todo:
            generator = generator or EpisodeGenerator(config)
            generator.generate(out_dir, index, progress=progress)
            bar.update()
    else:
        # spawn, not fork: the parent may hold OpenCV / OpenMP threads that a forked child cannot use.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            for future in as_completed([pool.submit(_generate_episode, out_dir, index, config) for index in todo]):
                future.result()  # re-raises a worker's error; finished episodes stay complete on disk
                bar.update()
    bar.close()
    return written


def _generate_episode(out_dir: Path, index: int, config: SynthConfig) -> None:
    """One episode in a worker process (no per-frame bar: the parent shows one per episode)."""
    EpisodeGenerator(config).generate(out_dir, index, progress=False)
