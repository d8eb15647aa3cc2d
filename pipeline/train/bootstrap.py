"""Bootstrap training of the shipped default avatar, before issue 4's curated training exists.

The real networks (`models/`) are trained on data generated straight from the synthetic world's
components: no video encode, no curation, only the host's own voice and face.

Motion generator, stage 1 (audio path only; the guest branch stays zero: video_on = 0,
guest_visible = 0, the projector keeps its zero initialisation):
  - streams of host speech: varied talk-show sentences synthesised with espeak-ng in HOST_VOICE
    (a third with small rate/pitch changes), separated by silences, random gain and a faint noise
    floor, resampled to 16 kHz (`prepare_audio`) -> `log_mel`;
  - targets per 25 fps frame: the mouth from the phonemes (`viseme_tracks`: jawOpen, mouthPucker,
    mouthSmile* = a quarter of mouthStretch, as `pipeline.synth.behaviour` does), head motion that
    grows while talking, brows, gaze drift and blinks (the behaviour model's recipe), and the head's
    placement in the talking-head crop (tx, ty, scale; see `HostFraming`);
  - windows exactly as serving assembles them (`WindowBank`, the AvatarSpec contract): mel frames
    4*(n - past) .. 4*(n + K + lookahead) - 1 with log-mel silence (LOG_MEL_FLOOR) before the
    stream, the previous H motion frames with the rest pose before the stream, noise added to
    that history so the model cannot just copy it;
  - rectified flow matching (`flow_matching.flow_matching_loss`).
Renderer: random host motions (pose/expression ranges beyond what the generator emits) and frames
of the speech tracks, drawn by FacePainter as HOST_IDENTITY in the crop; L1 weighted towards eyes
and mouth + an image-gradient L1.
Guest encoder: random initialisation (stage 2 is issue 4's), kept in the checkpoint.

Everything generated is cached under `--cache` (resumable; training checkpoints every N steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from f2f.avatar_spec import AvatarSpec
from f2f.features.mel import LOG_MEL_FLOOR, log_mel, prepare_audio
from f2f.motion import FIELD_INDEX, MOTION_DIM, MOTION_FIELDS, clip_expressions, neutral_vector
from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME, SAMPLES_PER_FRAME, VIDEO_FPS
from models.avatar import Avatar, AvatarConfig, save_avatar
from models.guest_encoder import GuestEncoderConfig
from models.motion_generator import MotionGenerator, MotionGeneratorConfig
from models.renderer import Renderer, RendererConfig
from pipeline.train.flow_matching import MotionBatch, flow_matching_loss, parameter_count

CACHE_VERSION = 1
MOUTH_FIELDS = ("jawOpen", "mouthPucker", "mouthSmileLeft", "mouthSmileRight")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def default_avatar_config() -> AvatarConfig:
    """The shipped default avatar's sizes: ~1.7 M parameters (~7 MiB float32), and a per-frame
    cost within the 25 ms CPU budget at 256x256 (see the model card for the measured figures)."""
    return AvatarConfig(
        name="default",
        spec=AvatarSpec(),
        guest_encoder=GuestEncoderConfig(),
        motion_generator=MotionGeneratorConfig(width=96, layers=4, heads=4, guest_kernels=8, sampling_steps=4),
        renderer=RendererConfig(hidden=128, channels=(64, 64, 48, 32, 16, 8)),
    )


@dataclass(frozen=True)
class HostFraming:
    """Where the host's head sits in the rendered talking-head crop (fractions of the frame)."""

    face_fraction: float = 0.5  # face height (forehead top to chin) / frame height at rest
    eye_x: float = 0.5  # mid-point between the eyes at rest
    eye_y: float = 0.42
    background_bgr: tuple[int, int, int] = (110, 105, 100)

    def rest_motion(self) -> np.ndarray:
        """The avatar at rest: frontal, neutral, eyes at (eye_x, eye_y).  # (15,)"""
        m = neutral_vector()
        m[FIELD_INDEX["tx"]] = self.eye_x - 0.5
        m[FIELD_INDEX["ty"]] = self.eye_y - 0.5
        m[FIELD_INDEX["scale"]] = self.face_fraction
        return m


@dataclass(frozen=True)
class SpeechDataConfig:
    train_streams: int = 48
    heldout_streams: int = 4
    stream_seconds: float = 30.0
    lead_silence_s: tuple[float, float] = (0.3, 1.5)
    gap_s: tuple[float, float] = (0.15, 1.8)
    long_gap_probability: float = 0.15  # a listening pause of 2..4 s
    voice_variation_probability: float = 0.33  # utterances with small rate/pitch changes (train only)
    # Utterances in another random espeak-ng voice (train only): the gateway's host audio is whatever
    # voice the client sends, so the mouth must not depend on the host voice's formants.
    other_voice_probability: float = 0.2
    crossvoice_streams: int = 2  # held-out streams per voice of CROSS_VOICES
    gain_range: tuple[float, float] = (0.15, 1.0)  # stream gain, log-uniform (peak 0.8 at gain 1)
    noise_probability: float = 0.5
    noise_range: tuple[float, float] = (1e-4, 3e-3)  # white-noise std, log-uniform
    seed: int = 1234


@dataclass(frozen=True)
class RendererDataConfig:
    frames: int = 6000
    speech_fraction: float = 0.5  # the rest are random poses and expressions (wider ranges)
    seed: int = 4321


@dataclass(frozen=True)
class GeneratorTrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    # History noise (normalised units, std drawn U(0, max) per sample): large on the mouth fields,
    # which must come from the audio, not from the history; small on the rest, whose continuity is
    # what the history is for, but whose rollout has the model's own small errors.
    history_noise_max: float = 0.5
    history_noise_other_max: float = 0.1
    # The gateway starts a session's history from f2f.motion.neutral_vector() (scale 0.2, eyes at the
    # image centre), far from this avatar's rest pose: some windows get their first 1..H history
    # frames replaced by it, so the model leaves that start towards its own poses at once.
    history_reset_probability: float = 0.03
    mouth_weight: float = 2.0  # loss weight of the mouth fields (the others weigh 1)
    checkpoint_every: int = 250
    seed: int = 7


@dataclass(frozen=True)
class RendererTrainConfig:
    steps: int = 1500
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    ema_decay: float = 0.98
    grad_clip: float = 1.0
    feature_weight: float = 4.0  # extra L1 weight on eyes and mouth (Gaussian blobs)
    gradient_weight: float = 1.0  # L1 on image gradients (sharp edges)
    checkpoint_every: int = 100
    seed: int = 11


@dataclass(frozen=True)
class EvalConfig:
    renderer_frames: int = 300  # frames measured with the face mesh per motion source
    seed: int = 99


@dataclass(frozen=True)
class BootstrapConfig:
    avatar: AvatarConfig = field(default_factory=default_avatar_config)
    framing: HostFraming = HostFraming()
    speech: SpeechDataConfig = SpeechDataConfig()
    renderer_data: RendererDataConfig = RendererDataConfig()
    generator_training: GeneratorTrainConfig = GeneratorTrainConfig()
    renderer_training: RendererTrainConfig = RendererTrainConfig()
    evaluation: EvalConfig = EvalConfig()
    threads: int = 2

    def to_dict(self) -> dict:
        data = asdict(self)
        data["avatar"] = self.avatar.to_dict()
        return data


def tiny_bootstrap_config() -> BootstrapConfig:
    """Seconds-scale settings for tests: tiny networks, a few short streams, a few steps."""
    from models.avatar import tiny_config

    return BootstrapConfig(
        avatar=dataclasses.replace(tiny_config("tiny-bootstrap"), notes={}),
        speech=SpeechDataConfig(train_streams=2, heldout_streams=1, stream_seconds=6.0, crossvoice_streams=1),
        renderer_data=RendererDataConfig(frames=32),
        generator_training=GeneratorTrainConfig(
            steps=60, batch_size=32, warmup_steps=5, checkpoint_every=20, ema_decay=0.9
        ),
        renderer_training=RendererTrainConfig(
            steps=30, batch_size=8, warmup_steps=3, checkpoint_every=10, ema_decay=0.9
        ),
        evaluation=EvalConfig(renderer_frames=8),
    )


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The host's face in the crop
# ---------------------------------------------------------------------------------------------


def _rotations(motion: np.ndarray) -> np.ndarray:
    """R = Ryaw @ Rpitch @ Rroll per row (f2f.motion conventions).  (N, 15) -> (N, 3, 3)"""
    a, b, g = (np.radians(motion[:, FIELD_INDEX[k]].astype(np.float64)) for k in ("yaw", "pitch", "roll"))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    zero, one = np.zeros_like(a), np.ones_like(a)
    r_yaw = np.stack([np.stack([ca, zero, -sa], -1), np.stack([zero, one, zero], -1), np.stack([sa, zero, ca], -1)], -2)
    r_pitch = np.stack(
        [np.stack([one, zero, zero], -1), np.stack([zero, cb, -sb], -1), np.stack([zero, sb, cb], -1)], -2
    )
    r_roll = np.stack(
        [np.stack([cg, -sg, zero], -1), np.stack([sg, cg, zero], -1), np.stack([zero, zero, one], -1)], -2
    )
    return r_yaw @ r_pitch @ r_roll


class HostDrawer:
    """Draws HOST_IDENTITY into a square talking-head crop for motion vectors.

    tx, ty follow `f2f.motion`: the mid-point between the eyes relative to the image centre, so the
    neck pivot is placed where it puts the eyes there for the given rotation; scale is the face
    height per image height."""

    def __init__(self, framing: HostFraming, size: int):
        from pipeline.synth.cast import HOST_IDENTITY
        from pipeline.synth.face_drawing import MOUTH_Y, PIVOT, FacePainter

        self.framing, self.size = framing, size
        self.painter = FacePainter(HOST_IDENTITY)
        self._pivot = PIVOT
        self._eye = self.painter.eye_corners().mean(axis=0)  # (3,) face coordinates
        spacing = 0.18 * HOST_IDENTITY.eye_spacing
        # Eyes and mouth centre (face coordinates) for the loss weights; the mouth point drops with the jaw.
        self._features = self.painter.head.on_face(np.array([-spacing, spacing, 0.0]), np.array([0.0, 0.0, MOUTH_Y]))

    def eye_offset(self, motion: np.ndarray) -> np.ndarray:
        """Eye mid-point minus neck pivot, in face heights, as the camera sees it.  (N, 15) -> (N, 2)"""
        return (_rotations(motion) @ (self._eye - self._pivot))[:, :2]

    def placement(self, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 15) -> pivot pixels (N, 2), face height pixels (N,)."""
        face_px = motion[:, FIELD_INDEX["scale"]].astype(np.float64) * self.size
        eye_px = (motion[:, [FIELD_INDEX["tx"], FIELD_INDEX["ty"]]].astype(np.float64) + 0.5) * self.size
        return eye_px - face_px[:, None] * self.eye_offset(motion), face_px

    def feature_points(self, motion: np.ndarray) -> np.ndarray:
        """Pixels of the right eye, left eye and mouth centre.  (N, 15) -> (N, 3, 2)"""
        pivot, face_px = self.placement(motion)
        points = np.repeat(self._features[None], len(motion), axis=0)  # (N, 3, 3)
        points[:, 2, 1] += 0.09 * np.clip(motion[:, FIELD_INDEX["jawOpen"]], 0, 1)
        cam = np.einsum("nij,nkj->nki", _rotations(motion), points - self._pivot)
        return pivot[:, None, :] + face_px[:, None, None] * cam[..., :2]

    def draw(self, motion: np.ndarray) -> np.ndarray:
        """One motion vector (15,) -> BGR uint8 (S, S, 3)."""
        image = np.empty((self.size, self.size, 3), np.uint8)
        image[:] = self.framing.background_bgr
        pivot, face_px = self.placement(motion[None])
        self.painter.draw(image, motion, (float(pivot[0, 0]), float(pivot[0, 1])), float(face_px[0]))
        return image


# ---------------------------------------------------------------------------------------------
# Host motion while talking and listening (the behaviour model's recipe, in crop coordinates)
# ---------------------------------------------------------------------------------------------


class HostMotionModel:
    def __init__(self, framing: HostFraming, drawer_eye_offset, fps: float = VIDEO_FPS):
        self.framing = framing
        self.eye_offset = drawer_eye_offset  # (N, 15) -> (N, 2), HostDrawer.eye_offset
        self.fps = fps

    def track(
        self, rng: np.random.Generator, times: np.ndarray, speaking: np.ndarray, mouth: dict[str, np.ndarray]
    ) -> np.ndarray:
        """(F,) frame times, (F,) speaking mask, viseme tracks -> motion (F, 15) in the crop."""
        from pipeline.synth.behaviour import bump, smooth, smooth_noise

        frames, fps = len(times), self.fps
        track = np.tile(self.framing.rest_motion(), (frames, 1)).astype(np.float64)
        activity = smooth(speaking.astype(np.float64), 0.6 * fps)  # 0 listening .. 1 talking

        track[:, FIELD_INDEX["jawOpen"]] = mouth["jawOpen"]
        track[:, FIELD_INDEX["mouthPucker"]] = mouth["mouthPucker"]
        track[:, FIELD_INDEX["mouthSmileLeft"]] = 0.25 * mouth["mouthStretch"]
        track[:, FIELD_INDEX["mouthSmileRight"]] = 0.25 * mouth["mouthStretch"]

        track[:, FIELD_INDEX["yaw"]] = (
            rng.uniform(-4.0, 4.0)
            + smooth_noise(rng, frames, 1.2 * fps, 3.0)
            + smooth_noise(rng, frames, 0.4 * fps, 2.5) * activity
        )
        track[:, FIELD_INDEX["pitch"]] = smooth_noise(rng, frames, 0.25 * fps, 3.0) * (0.3 + activity) + smooth_noise(
            rng, frames, 2.0 * fps, 2.0
        )
        track[:, FIELD_INDEX["roll"]] = smooth_noise(rng, frames, 1.5 * fps, 1.5) * (0.5 + activity)
        track[:, FIELD_INDEX["browInnerUp"]] = np.clip(smooth_noise(rng, frames, 0.5 * fps, 0.25) * activity, 0, 1)
        track[:, FIELD_INDEX["eyeLookX"]] = smooth_noise(rng, frames, 1.0 * fps, 0.08)
        track[:, FIELD_INDEX["eyeLookY"]] = smooth_noise(rng, frames, 0.8 * fps, 0.08)
        blink = np.zeros(frames)
        t = rng.exponential(3.5)
        while len(times) and t < times[-1]:  # ~17 blinks a minute, ~150 ms each
            blink = np.maximum(blink, bump(times, t, 0.06, 0.04, 0.08))
            t += 0.4 + rng.exponential(3.3)
        track[:, FIELD_INDEX["eyeBlinkLeft"]] = blink
        track[:, FIELD_INDEX["eyeBlinkRight"]] = blink

        # The head sways about the neck: the pivot drifts a little, the face size breathes, and the
        # eyes (tx, ty) follow from the pivot and the rotation.
        scale = self.framing.face_fraction * (1.0 + smooth_noise(rng, frames, 3.0 * fps, 0.02))
        track[:, FIELD_INDEX["scale"]] = scale
        rest = self.framing.rest_motion()[None]
        rest_pivot = (
            np.array([self.framing.eye_x, self.framing.eye_y]) - self.framing.face_fraction * self.eye_offset(rest)[0]
        )
        drift = np.stack([smooth_noise(rng, frames, 2.0 * fps, 0.012), smooth_noise(rng, frames, 2.5 * fps, 0.008)], -1)
        eyes = rest_pivot + drift + scale[:, None] * self.eye_offset(track.astype(np.float32))
        track[:, FIELD_INDEX["tx"]] = eyes[:, 0] - 0.5
        track[:, FIELD_INDEX["ty"]] = eyes[:, 1] - 0.5
        return clip_expressions(track.astype(np.float32))


def random_host_motion(rng: np.random.Generator, framing: HostFraming, count: int) -> np.ndarray:
    """Poses and expression mixes wider than talking needs, for the renderer.  -> (count, 15)"""
    m = np.tile(framing.rest_motion(), (count, 1))
    m[:, FIELD_INDEX["yaw"]] = rng.uniform(-25, 25, count)
    m[:, FIELD_INDEX["pitch"]] = rng.uniform(-15, 15, count)
    m[:, FIELD_INDEX["roll"]] = rng.uniform(-12, 12, count)
    m[:, FIELD_INDEX["tx"]] += rng.uniform(-0.05, 0.05, count)
    m[:, FIELD_INDEX["ty"]] += rng.uniform(-0.05, 0.05, count)
    m[:, FIELD_INDEX["scale"]] *= rng.uniform(0.92, 1.08, count)

    def sometimes(p: float) -> np.ndarray:
        return np.where(rng.random(count) < p, rng.uniform(0, 1, count), 0.0)

    m[:, FIELD_INDEX["jawOpen"]] = sometimes(0.75)
    smile = sometimes(0.4)
    m[:, FIELD_INDEX["mouthSmileLeft"]] = smile
    m[:, FIELD_INDEX["mouthSmileRight"]] = np.where(smile > 0, np.clip(smile + rng.uniform(-0.2, 0.2, count), 0, 1), 0)
    m[:, FIELD_INDEX["mouthPucker"]] = np.where(smile > 0, 0.0, sometimes(0.5))
    blink = sometimes(0.3)
    m[:, FIELD_INDEX["eyeBlinkLeft"]] = blink
    m[:, FIELD_INDEX["eyeBlinkRight"]] = np.where(rng.random(count) < 0.85, blink, sometimes(0.3))
    m[:, FIELD_INDEX["browInnerUp"]] = sometimes(0.4)
    m[:, FIELD_INDEX["eyeLookX"]] = rng.uniform(-0.7, 0.7, count)
    m[:, FIELD_INDEX["eyeLookY"]] = rng.uniform(-0.5, 0.5, count)
    return clip_expressions(m.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Speech streams: audio, log-mel and motion targets
# ---------------------------------------------------------------------------------------------


@dataclass
class SpeechStream:
    audio: np.ndarray  # (F * 640,) float32, 16 kHz
    mel: np.ndarray  # (4F, 80) float32 log-mel
    motion: np.ndarray  # (F, 15) float32 targets
    rms: np.ndarray  # (F,) float32 loudness per 40 ms frame
    speaking: np.ndarray  # (F,) bool
    texts: list[str] = field(default_factory=list)  # the sentences spoken, in order

    @property
    def frames(self) -> int:
        return len(self.motion)


def _texts(rng: np.random.Generator):
    """Endless talk-show sentences (the synthetic world's word banks and templates)."""
    from pipeline.synth.script import _Writer  # the talk-show writer: openings, questions, answers, ...

    writer = _Writer(rng, ["guest"])
    while True:
        kind = rng.random()
        if kind < 0.35:
            yield from writer.question("guest", address=bool(rng.random() < 0.3))
        elif kind < 0.7:
            yield from writer.answer("guest", 1 + int(rng.integers(2)))
        elif kind < 0.8:
            yield writer.reaction()
        elif kind < 0.88:
            yield writer.backchannel()
        elif kind < 0.95:
            yield from writer.opening(["guest"])
        else:
            yield from writer.goodbye(["guest"])


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _random_voice(rng: np.random.Generator):
    from pipeline.synth.speech import FEMALE_VARIANTS, LANGUAGES, MALE_VARIANTS, Voice

    variants = MALE_VARIANTS + FEMALE_VARIANTS
    variant = variants[int(rng.integers(len(variants)))]
    language = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
    return Voice(
        f"{language}+{variant}", int(rng.integers(10, 91)), int(rng.integers(30, 86)), int(rng.integers(140, 211))
    )


def cross_voices():
    """Held-out voices other than the host's: espeak-ng's plain default (what the e2e test's fake
    microphone speaks), a female voice, a fast British one."""
    from pipeline.synth.speech import Voice

    return {
        "en-us (espeak default)": Voice("en-us", 50, 50, 175),
        "en-us+f3": Voice("en-us+f3", 60, 50, 170),
        "en-gb+m1 fast": Voice("en-gb+m1", 40, 60, 200),
    }


class SpeechCorpus:
    """Builds (and caches) host speech streams with their motion targets."""

    def __init__(self, config: SpeechDataConfig, framing: HostFraming, drawer: HostDrawer):
        self.config = config
        self.motion_model = HostMotionModel(framing, drawer.eye_offset)

    def build_stream(self, synth, seed: int, vary_voice: bool, voice=None) -> SpeechStream:
        """One stream in HOST_VOICE (varied when `vary_voice`), or all in `voice` when given."""
        from pipeline.synth.cast import HOST_VOICE
        from pipeline.synth.speech import Phoneme
        from pipeline.synth.visemes import viseme_tracks

        cfg = self.config
        rng = np.random.default_rng(seed)
        rate = synth.sample_rate
        buffer = np.zeros(int(round(cfg.stream_seconds * rate)), np.float32)  # (samples,) at 22.05 kHz
        phonemes: list[Phoneme] = []
        spans: list[tuple[float, float]] = []
        said: list[str] = []
        texts = _texts(rng)
        t = rng.uniform(*cfg.lead_silence_s)
        fixed_voice = voice
        while True:
            voice = fixed_voice or HOST_VOICE
            if vary_voice and fixed_voice is None:
                draw = rng.random()
                if draw < cfg.other_voice_probability:
                    voice = _random_voice(rng)
                elif draw < cfg.other_voice_probability + cfg.voice_variation_probability:
                    voice = HOST_VOICE.with_changes(pitch=int(rng.integers(-8, 9)), rate=int(rng.integers(-25, 26)))
            text = next(texts)
            utterance = synth.synthesize(text, voice)
            start = int(round(t * rate))
            if len(utterance.audio) == 0:
                continue
            if start + len(utterance.audio) > len(buffer):
                break
            peak = float(np.abs(utterance.audio).max())
            buffer[start : start + len(utterance.audio)] += utterance.audio * (0.8 * rng.uniform(0.7, 1.0) / peak)
            t0 = start / rate
            phonemes += [Phoneme(p.symbol, t0 + p.start_s, t0 + p.end_s) for p in utterance.phonemes]
            spans.append((t0, t0 + utterance.duration_s))
            said.append(text)
            gap = rng.uniform(2.0, 4.0) if rng.random() < cfg.long_gap_probability else rng.uniform(*cfg.gap_s)
            t = t0 + utterance.duration_s + gap
        buffer *= _log_uniform(rng, *cfg.gain_range)

        audio = prepare_audio(buffer, rate)  # (samples,) 16 kHz
        frames = len(audio) // SAMPLES_PER_FRAME
        audio = np.ascontiguousarray(audio[: frames * SAMPLES_PER_FRAME])
        if rng.random() < cfg.noise_probability:
            audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * np.float32(
                _log_uniform(rng, *cfg.noise_range)
            )
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        mel = log_mel(audio)  # (4F, 80)
        times = np.arange(frames, dtype=np.float64) / VIDEO_FPS
        speaking = np.zeros(frames, bool)
        for a, b in spans:
            speaking |= (times >= a) & (times < b)
        mouth = viseme_tracks(phonemes, times)
        motion = self.motion_model.track(rng, times, speaking, mouth)
        rms = np.sqrt(np.mean(audio.reshape(frames, SAMPLES_PER_FRAME).astype(np.float64) ** 2, axis=1))
        return SpeechStream(audio, mel, motion, rms.astype(np.float32), speaking, said)

    def load_or_build(
        self, path: Path, count: int, seed_offset: int, vary_voice: bool, desc: str, voice=None
    ) -> list[SpeechStream]:
        if path.is_file():
            return _load_streams(path)
        from pipeline.synth.speech import EspeakSynthesizer

        synth = EspeakSynthesizer()
        streams = [
            self.build_stream(synth, self.config.seed + seed_offset + i, vary_voice, voice)
            for i in tqdm(range(count), desc=desc, unit="stream")
        ]
        _save_streams(path, streams)
        return streams


def _save_streams(path: Path, streams: list[SpeechStream]) -> None:
    arrays = {"frames": np.array([s.frames for s in streams])}
    for key in ("audio", "mel", "motion", "rms", "speaking"):
        arrays[key] = np.concatenate([getattr(s, key) for s in streams])
    arrays["texts"] = np.array(json.dumps([s.texts for s in streams]))
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_streams(path: Path) -> list[SpeechStream]:
    with np.load(path) as archive:
        data = {key: archive[key] for key in archive.files}  # each member read once
    texts = json.loads(str(data["texts"])) if "texts" in data else [[] for _ in data["frames"]]
    streams, f0 = [], 0
    for frames, said in zip(data["frames"].tolist(), texts):
        f1 = f0 + frames
        streams.append(
            SpeechStream(
                audio=data["audio"][f0 * SAMPLES_PER_FRAME : f1 * SAMPLES_PER_FRAME],
                mel=data["mel"][f0 * MEL_FRAMES_PER_VIDEO_FRAME : f1 * MEL_FRAMES_PER_VIDEO_FRAME],
                motion=data["motion"][f0:f1],
                rms=data["rms"][f0:f1],
                speaking=data["speaking"][f0:f1],
                texts=said,
            )
        )
        f0 = f1
    return streams


# ---------------------------------------------------------------------------------------------
# Training windows, exactly as serving assembles them
# ---------------------------------------------------------------------------------------------


class WindowBank:
    """All (stream, frame) windows of a list of streams, gathered in batches.

    The step that makes frames n .. n+K-1 sees the mel frames 4*(n - past) .. 4*(n + K + L) - 1
    (log-mel silence, LOG_MEL_FLOOR, where the index falls outside the stream: before its start,
    and after its end where a flushed stream is zero-padded) and the motion frames n-H .. n-1
    (the avatar's rest motion before the stream starts, as a session starts from it)."""

    def __init__(self, streams: list[SpeechStream], spec: AvatarSpec, rest_motion: np.ndarray):
        self.spec = spec
        step = MEL_FRAMES_PER_VIDEO_FRAME
        past, k, look, hist = (
            spec.audio_past_frames,
            spec.frames_per_step,
            spec.lookahead_frames,
            spec.motion_history_frames,
        )
        mels, motions, targets, self._mel_base, self._motion_base, self._target_base = [], [], [], [], [], []
        mel_offset = motion_offset = target_offset = 0
        floor = np.full((1, spec.mel_bins), LOG_MEL_FLOOR, np.float32)
        index = []
        for s, stream in enumerate(streams):
            padded_mel = np.concatenate(
                [np.repeat(floor, step * past, 0), stream.mel, np.repeat(floor, step * (k + look), 0)]
            )
            padded_motion = np.concatenate([np.repeat(rest_motion[None].astype(np.float32), hist, 0), stream.motion])
            mels.append(padded_mel)
            motions.append(padded_motion)
            targets.append(stream.motion)
            self._mel_base.append(mel_offset)
            self._motion_base.append(motion_offset)
            self._target_base.append(target_offset)
            mel_offset += len(padded_mel)
            motion_offset += len(padded_motion)
            target_offset += len(stream.motion)
            count = stream.frames - k + 1
            index.append(np.stack([np.full(max(count, 0), s), np.arange(max(count, 0))], 1))
        self.mel = np.concatenate(mels)  # (rows, 80)
        self.motion = np.concatenate(motions)  # (rows, 15) padded history source
        self.target = np.concatenate(targets)  # (rows, 15)
        self.index = np.concatenate(index)  # (N, 2) stream, frame
        self._mel_base = np.array(self._mel_base)
        self._motion_base = np.array(self._motion_base)
        self._target_base = np.array(self._target_base)
        self._mel_rows = np.arange(spec.mel_frames)
        self._hist_rows = np.arange(hist)
        self._target_rows = np.arange(k)

    def __len__(self) -> int:
        return len(self.index)

    def windows(self, stream: np.ndarray, frame: np.ndarray) -> dict[str, np.ndarray]:
        """(B,) stream and frame indices -> audio_mel (B, M, 80), motion_history (B, H, 15), target (B, K, 15)."""
        step = MEL_FRAMES_PER_VIDEO_FRAME
        mel_rows = self._mel_base[stream][:, None] + step * frame[:, None] + self._mel_rows
        hist_rows = self._motion_base[stream][:, None] + frame[:, None] + self._hist_rows
        target_rows = self._target_base[stream][:, None] + frame[:, None] + self._target_rows
        return {
            "audio_mel": self.mel[mel_rows],
            "motion_history": self.motion[hist_rows],
            "target": self.target[target_rows],
        }

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        chosen = self.index[rng.integers(len(self.index), size=batch)]
        return self.windows(chosen[:, 0], chosen[:, 1])


def audio_only_guest_inputs(spec: AvatarSpec, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """No partner: zero features, nothing visible (the stage-1 guest inputs). -> (B,P,G,D), (B,P,G)"""
    return (
        torch.zeros(batch, spec.partners, spec.guest_context_frames, spec.guest_feature_dim),
        torch.zeros(batch, spec.partners, spec.guest_context_frames),
    )


# ---------------------------------------------------------------------------------------------
# Training loops (resumable)
# ---------------------------------------------------------------------------------------------


def _lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(progress, 1.0))))


class _Trainer:
    """A small resumable loop: AdamW, warmup + cosine, gradient clipping, EMA weights, checkpoints."""

    name = "trainer"

    def __init__(self, module: torch.nn.Module, config, checkpoint: Path, fingerprint: str, quiet: bool = False):
        self.module, self.config, self.checkpoint, self.fingerprint, self.quiet = (
            module,
            config,
            checkpoint,
            fingerprint,
            quiet,
        )
        self.ema = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.optimizer = torch.optim.AdamW(
            [p for p in module.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        self.step = 0
        self.losses: list[float] = []
        self.seconds = 0.0
        self.rng = np.random.default_rng(config.seed)
        self.torch_rng = torch.Generator().manual_seed(config.seed)
        self._resume()

    def _resume(self) -> None:
        if not self.checkpoint.is_file():
            return
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            print(f"{self.name}: {self.checkpoint} is from another configuration; starting afresh", file=sys.stderr)
            return
        self.module.load_state_dict(state["model"])
        self.ema = state["ema"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.losses, self.seconds = state["step"], state["losses"], state["seconds"]
        self.rng.bit_generator.state = state["numpy_rng"]
        self.torch_rng.set_state(state["torch_rng"])

    def _save(self) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "model": self.module.state_dict(),
            "ema": self.ema,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "losses": self.losses,
            "seconds": self.seconds,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": self.torch_rng.get_state(),
        }
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".partial")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint)

    def loss(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    def run(self, until: int | None = None) -> None:
        """Train to `config.steps` (or stop at step `until`, as an interruption would)."""
        cfg = self.config
        last = cfg.steps if until is None else min(until, cfg.steps)
        self.module.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.name, unit="step", disable=self.quiet)
        while self.step < last:
            started = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = _lr_at(self.step, cfg.steps, cfg.warmup_steps, cfg.lr)
            loss = self.loss()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
            self.optimizer.step()
            with torch.no_grad():
                for key, value in self.module.state_dict().items():
                    if value.dtype.is_floating_point:
                        self.ema[key].mul_(cfg.ema_decay).add_(value.detach(), alpha=1.0 - cfg.ema_decay)
                    else:
                        self.ema[key].copy_(value)
            self.losses.append(float(loss.detach()))
            self.step += 1
            self.seconds += time.perf_counter() - started
            bar.update(1)
            if self.step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(self.losses[-50:]):.4f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self._save()
        bar.close()
        self.module.eval()

    def ema_state(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.ema.items()}

    def loss_summary(self) -> dict:
        losses = np.array(self.losses)
        if not len(losses):
            return {}
        head = losses[: max(len(losses) // 20, 1)]
        tail = losses[-max(len(losses) // 20, 1) :]
        return {
            "steps": self.step,
            "first_mean": round(float(head.mean()), 5),
            "last_mean": round(float(tail.mean()), 5),
            "seconds": round(self.seconds, 1),
        }


class GeneratorTrainer(_Trainer):
    name = "motion generator"

    def __init__(
        self,
        generator: MotionGenerator,
        bank: WindowBank,
        config: GeneratorTrainConfig,
        checkpoint: Path,
        fingerprint: str,
        quiet: bool = False,
    ):
        self.bank = bank
        self.field_weights = torch.ones(MOTION_DIM)
        for name in MOUTH_FIELDS:
            self.field_weights[FIELD_INDEX[name]] = config.mouth_weight
        self.field_weights *= MOTION_DIM / self.field_weights.sum()
        self.mouth_mask = torch.zeros(MOTION_DIM, dtype=torch.bool)
        self.mouth_mask[[FIELD_INDEX[name] for name in MOUTH_FIELDS]] = True
        self.session_start = torch.from_numpy(neutral_vector())  # what the gateway's history starts from
        super().__init__(generator, config, checkpoint, fingerprint, quiet)

    def loss(self) -> torch.Tensor:
        generator: MotionGenerator = self.module
        cfg, spec = self.config, generator.spec
        windows = self.bank.sample(self.rng, cfg.batch_size)
        history = torch.from_numpy(windows["motion_history"])
        # History noise: what the model will see in rollout is its own (imperfect) motion.
        u = torch.rand(cfg.batch_size, 1, 1, generator=self.torch_rng)
        sigma = u * torch.where(self.mouth_mask, cfg.history_noise_max, cfg.history_noise_other_max)  # (B, 1, 15)
        history = history + sigma * generator.motion_std * torch.randn(history.shape, generator=self.torch_rng)
        reset = torch.rand(cfg.batch_size, generator=self.torch_rng) < cfg.history_reset_probability  # (B,)
        first = torch.randint(1, spec.motion_history_frames + 1, (cfg.batch_size,), generator=self.torch_rng)
        replaced = reset[:, None] & (torch.arange(spec.motion_history_frames)[None] < first[:, None])  # (B, H)
        history = torch.where(replaced[..., None], self.session_start, history)
        guest_features, guest_visible = audio_only_guest_inputs(spec, cfg.batch_size)
        batch = MotionBatch(
            audio_mel=torch.from_numpy(windows["audio_mel"]),
            motion_history=history,
            target=torch.from_numpy(windows["target"]),
            guest_features=guest_features,
            guest_visible=guest_visible,
            video_on=torch.zeros(cfg.batch_size),
        )
        return flow_matching_loss(generator, batch, self.torch_rng, self.field_weights)


class RendererFrames:
    """Cached renderer training material: BGR frames (memory-mapped), motions, feature points."""

    def __init__(self, directory: Path):
        self.images = np.load(directory / "frames.npy", mmap_mode="r")  # (N, S, S, 3) uint8 BGR
        meta = np.load(directory / "meta.npz")
        self.motion = meta["motion"]  # (N, 15)
        self.points = meta["points"]  # (N, 3, 2) right eye, left eye, mouth (pixels)
        self.face_px = meta["face_px"]  # (N,)

    def __len__(self) -> int:
        return len(self.motion)

    @staticmethod
    def build(directory: Path, drawer: HostDrawer, motion: np.ndarray) -> "RendererFrames":
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "meta.npz").is_file():
            return RendererFrames(directory)
        size = drawer.size
        tmp = directory / "frames.partial.npy"
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(motion), size, size, 3))
        for i in tqdm(range(len(motion)), desc="renderer frames", unit="frame"):
            images[i] = drawer.draw(motion[i])
        images.flush()
        del images
        os.replace(tmp, directory / "frames.npy")
        _, face_px = drawer.placement(motion)
        np.savez(
            directory / "meta.partial.npz",
            motion=motion,
            points=drawer.feature_points(motion).astype(np.float32),
            face_px=face_px.astype(np.float32),
        )
        os.replace(directory / "meta.partial.npz", directory / "meta.npz")
        return RendererFrames(directory)


def bgr_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float RGB in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2).float() / 255.0


def tensor_to_bgr(frames: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) RGB in 0..1 -> (B, S, S, 3) uint8 BGR."""
    rgb = (frames.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(rgb[..., ::-1])


class RendererTrainer(_Trainer):
    name = "renderer"

    def __init__(
        self,
        renderer: Renderer,
        frames: RendererFrames,
        config: RendererTrainConfig,
        checkpoint: Path,
        fingerprint: str,
        quiet: bool = False,
    ):
        self.frames = frames
        size = renderer.spec.frame_size
        axis = torch.arange(size, dtype=torch.float32)
        self._ys, self._xs = torch.meshgrid(axis, axis, indexing="ij")
        super().__init__(renderer, config, checkpoint, fingerprint, quiet)

    def weight_map(self, points: np.ndarray, face_px: np.ndarray) -> torch.Tensor:
        """(B, 3, 2) eyes + mouth pixels, (B,) face heights -> (B, 1, S, S) loss weights."""
        pts = torch.from_numpy(points).float()
        sigma = torch.from_numpy(face_px).float()[:, None] * torch.tensor([0.07, 0.07, 0.09])  # (B, 3)
        d2 = (self._xs - pts[:, :, 0, None, None]) ** 2 + (self._ys - pts[:, :, 1, None, None]) ** 2  # (B, 3, S, S)
        blobs = torch.exp(-0.5 * d2 / sigma[:, :, None, None] ** 2).sum(dim=1, keepdim=True)
        return 1.0 + self.config.feature_weight * blobs

    def loss(self) -> torch.Tensor:
        cfg = self.config
        chosen = np.sort(self.rng.choice(len(self.frames), size=cfg.batch_size, replace=False))
        target = bgr_to_tensor(self.frames.images[chosen])  # (B, 3, S, S)
        motion = torch.from_numpy(self.frames.motion[chosen])[:, None]  # (B, 1, 15)
        weights = self.weight_map(self.frames.points[chosen], self.frames.face_px[chosen])
        out = self.module(motion)[:, 0]  # (B, 3, S, S)
        loss = (weights * (out - target).abs()).mean() / weights.mean()
        if cfg.gradient_weight:
            for dim in (2, 3):
                loss = loss + cfg.gradient_weight * (out.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
        return loss


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def rollout(
    generator: MotionGenerator,
    streams: list[SpeechStream],
    rest_motion: np.ndarray,
    seed: int,
    start_motion: np.ndarray | None = None,
) -> np.ndarray:
    """Autoregressive generation as the gateway runs it: one step per K frames, through the exported
    forward (lambda_video = 0, no partner), the model's own output fed back as history, which starts
    as H copies of `start_motion` (default: neutral_vector(), as server/avatar_loop.py starts it).
    -> (S, F, 15) for the S streams cut to the shortest length."""
    spec = generator.spec
    k, hist = spec.frames_per_step, spec.motion_history_frames
    frames = min(s.frames for s in streams) // k * k
    bank = WindowBank([dataclasses.replace(s, motion=s.motion[:frames]) for s in streams], spec, rest_motion)
    batch = len(streams)
    stream_index = np.arange(batch)
    start = neutral_vector() if start_motion is None else start_motion
    history = torch.from_numpy(np.repeat(start[None, None].astype(np.float32), hist, 1)).repeat(batch, 1, 1)
    guest_features, guest_visible = audio_only_guest_inputs(spec, batch)
    lam = torch.zeros(batch, 1)
    gen = torch.Generator().manual_seed(seed)
    out = np.zeros((batch, frames, MOTION_DIM), np.float32)
    for n in range(0, frames, k):
        mel = torch.from_numpy(bank.windows(stream_index, np.full(batch, n))["audio_mel"])
        noise = torch.randn(batch, k, MOTION_DIM, generator=gen)
        motion = generator(mel, guest_features, guest_visible, history, noise, lam)  # (B, K, 15)
        out[:, n : n + k] = motion.numpy()
        history = torch.cat([history, motion], dim=1)[:, -hist:]
    return out


@torch.no_grad()
def teacher_forced(
    generator: MotionGenerator, streams: list[SpeechStream], rest_motion: np.ndarray, seed: int, chunk: int = 1024
) -> list[np.ndarray]:
    """Every frame generated from the ground-truth history (no feedback). -> per stream (F, 15)."""
    spec = generator.spec
    bank = WindowBank(streams, spec, rest_motion)
    gen = torch.Generator().manual_seed(seed)
    outputs = np.zeros((len(bank), MOTION_DIM), np.float32)
    for i in range(0, len(bank), chunk):
        idx = bank.index[i : i + chunk]
        windows = bank.windows(idx[:, 0], idx[:, 1])
        b = len(idx)
        guest_features, guest_visible = audio_only_guest_inputs(spec, b)
        noise = torch.randn(b, spec.frames_per_step, MOTION_DIM, generator=gen)
        motion = generator(
            torch.from_numpy(windows["audio_mel"]),
            guest_features,
            guest_visible,
            torch.from_numpy(windows["motion_history"]),
            noise,
            torch.zeros(b, 1),
        )
        outputs[i : i + b] = motion[:, 0].numpy()
    result, start = [], 0
    for s in streams:
        count = s.frames - spec.frames_per_step + 1
        result.append(outputs[start : start + count])
        start += count
    return result


def motion_metrics(predicted: list[np.ndarray], streams: list[SpeechStream]) -> dict:
    """jawOpen against ground truth and loudness, and the rollout's statistics against the data's."""
    jaw = FIELD_INDEX["jawOpen"]
    pred = np.concatenate([p[:, jaw] for p in predicted])
    gt = np.concatenate([s.motion[: len(p), jaw] for p, s in zip(predicted, streams)])
    rms = np.concatenate([s.rms[: len(p)] for p, s in zip(predicted, streams)])
    speaking = np.concatenate([s.speaking[: len(p)] for p, s in zip(predicted, streams)])
    all_pred = np.concatenate(predicted)
    all_gt = np.concatenate([s.motion[: len(p)] for p, s in zip(predicted, streams)])
    # Silence well away from speech (the lips may lead and trail the sound by a few frames).
    quiet = ~np.convolve(speaking.astype(float), np.ones(7), mode="same").astype(bool)
    out = {
        "jaw_corr_gt": round(_corr(pred, gt), 4),
        "jaw_corr_loudness": round(_corr(pred, rms), 4),
        "jaw_corr_log_loudness": round(_corr(pred, np.log(rms + 1e-5)), 4),
        "gt_jaw_corr_loudness": round(_corr(gt, rms), 4),
        "jaw_mae": round(float(np.abs(pred - gt).mean()), 4),
        "jaw_mean_speaking": round(float(pred[speaking].mean()), 4) if speaking.any() else None,
        "jaw_mean_silence": round(float(pred[quiet].mean()), 4) if quiet.any() else None,
        "jaw_step_mean": round(float(np.mean([np.abs(np.diff(p[:, jaw])).mean() for p in predicted])), 4),
        "gt_jaw_step_mean": round(
            float(np.mean([np.abs(np.diff(s.motion[: len(p), jaw])).mean() for p, s in zip(predicted, streams)])), 4
        ),
        "frames": int(len(pred)),
    }
    # The session start: the face size of the first frame, and its error over the first second
    # against the rest (a rollout from a far-off history must not crawl back over seconds).
    scale = FIELD_INDEX["scale"]
    error = [np.abs(p[:, scale] - s.motion[: len(p), scale]) for p, s in zip(predicted, streams)]
    out["start_scale"] = round(float(np.mean([p[0, scale] for p in predicted])), 4)
    out["scale_error_first_second"] = round(float(np.mean([e[:VIDEO_FPS].mean() for e in error])), 4)
    out["scale_error_after"] = round(float(np.mean([e[VIDEO_FPS:].mean() for e in error])), 4)
    fields = {}
    for name in MOTION_FIELDS:
        i = FIELD_INDEX[name]
        step = np.mean([np.abs(np.diff(p[:, i])).mean() for p in predicted])
        gt_step = np.mean([np.abs(np.diff(s.motion[: len(p), i])).mean() for p, s in zip(predicted, streams)])
        fields[name] = {
            "mean": round(float(all_pred[:, i].mean()), 4),
            "gt_mean": round(float(all_gt[:, i].mean()), 4),
            "std": round(float(all_pred[:, i].std()), 4),
            "gt_std": round(float(all_gt[:, i].std()), 4),
            "min": round(float(all_pred[:, i].min()), 4),
            "max": round(float(all_pred[:, i].max()), 4),
            "step": round(float(step), 4),
            "gt_step": round(float(gt_step), 4),
        }
    out["fields"] = fields
    return out


@torch.no_grad()
def render_frames(renderer: Renderer, motion: np.ndarray, chunk: int = 16) -> np.ndarray:
    """(N, 15) -> (N, S, S, 3) uint8 BGR through the renderer (K = 1 per call)."""
    out = []
    for i in range(0, len(motion), chunk):
        frames = renderer(torch.from_numpy(motion[i : i + chunk].astype(np.float32))[:, None])[:, 0]
        out.append(tensor_to_bgr(frames))
    return np.concatenate(out)


def measure_faces(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face mesh on each BGR image -> found (N,) bool, measured motion (N, 15) (NaN where none)."""
    from f2f.features.face_geometry import FaceGeometryFeaturizer

    found = np.zeros(len(images), bool)
    measured = np.full((len(images), MOTION_DIM), np.nan, np.float32)
    with FaceGeometryFeaturizer(max_faces=1, static_images=True) as featurizer:
        for i, image in enumerate(images):
            faces = featurizer(np.ascontiguousarray(image))
            if faces:
                found[i] = True
                measured[i] = faces[0].motion
    return found, measured


def renderer_metrics(renderer: Renderer, drawer: HostDrawer, motion: np.ndarray) -> dict:
    """Face-mesh detection and jawOpen on rendered frames vs the commanded motion; the same on
    FacePainter's own frames of the same motion as the reference; PSNR between the two."""
    jaw = FIELD_INDEX["jawOpen"]
    rendered = render_frames(renderer, motion)
    painted = np.stack([drawer.draw(m) for m in motion])
    found, measured = measure_faces(rendered)
    ref_found, ref_measured = measure_faces(painted)
    mse = np.mean((rendered.astype(np.float64) - painted.astype(np.float64)) ** 2, axis=(1, 2, 3))
    psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-9))
    return {
        "frames": int(len(motion)),
        "face_detect_rate": round(float(found.mean()), 4),
        "jaw_corr_commanded": round(_corr(measured[found, jaw], motion[found, jaw]), 4),
        "jaw_mae_commanded": (
            round(float(np.abs(measured[found, jaw] - motion[found, jaw]).mean()), 4) if found.any() else None
        ),
        "reference_face_detect_rate": round(float(ref_found.mean()), 4),
        "reference_jaw_corr_commanded": round(_corr(ref_measured[ref_found, jaw], motion[ref_found, jaw]), 4),
        "psnr_db": round(float(psnr.mean()), 2),
    }


def save_grid(renderer: Renderer, drawer: HostDrawer, motion: np.ndarray, path: Path) -> Path:
    """Top row: the trained renderer; bottom row: FacePainter, same motion."""
    import cv2

    rendered = render_frames(renderer, motion)
    painted = np.stack([drawer.draw(m) for m in motion])
    grid = np.concatenate([np.concatenate(list(rendered), 1), np.concatenate(list(painted), 1)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)
    return path


# ---------------------------------------------------------------------------------------------
# Latency of the exported networks (onnxruntime, batch 1)
# ---------------------------------------------------------------------------------------------


def measure_latency(checkpoint: Path, repository: Path, calls: int = 200, threads: int = 0) -> dict:
    """Export `checkpoint` to `repository` (ONNX) and time each network at batch 1 with the session
    options of engines.embedded (intra_op threads `threads`, 0 = all cores; inter_op 1).
    Median milliseconds of `calls` calls after 20 warm-up calls."""
    import onnxruntime as ort

    from engines.repository import model_file
    from export.exporter import ExportOptions, export_checkpoint
    from export.onnx_export import example_inputs
    from f2f.avatar_spec import NETWORKS
    from models.avatar import load_config

    report = export_checkpoint(checkpoint, repository, ExportOptions(quiet=True))
    if not report["passed"]:
        raise RuntimeError(f"export failed: {report}")
    spec = load_config(checkpoint).spec
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    out: dict = {
        "calls": calls,
        "intra_op_threads": threads,
        "onnxruntime": ort.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "median_ms": {},
        "p90_ms": {},
    }
    for network in NETWORKS:
        session = ort.InferenceSession(
            str(model_file(repository, network)), options, providers=["CPUExecutionProvider"]
        )
        feed = {k: v.numpy() for k, v in example_inputs(spec, network, batch=1).items()}
        if network == "motion_generator":
            feed["lambda_video"][:] = 0.0
        for _ in range(20):
            session.run(None, feed)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - started)
        out["median_ms"][network] = round(float(np.median(times)) * 1e3, 3)
        out["p90_ms"][network] = round(float(np.percentile(times, 90)) * 1e3, 3)
    out["median_ms"]["sum"] = round(sum(out["median_ms"][n] for n in NETWORKS), 3)
    out["parity_max_abs_diff"] = max(row["max_abs_diff"] for row in report["parity"])
    return out


# ---------------------------------------------------------------------------------------------
# The whole bootstrap
# ---------------------------------------------------------------------------------------------


def _ensure_cache(cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated by pipeline.train.bootstrap\n*\n")


def _sentence_overlap(train: list[SpeechStream], heldout: list[SpeechStream]) -> dict:
    """How many held-out sentences were also spoken, word for word, in training (the templates are shared)."""
    seen = {t for s in train for t in s.texts}
    said = [t for s in heldout for t in s.texts]
    return {"count": len(said), "also_in_training": sum(t in seen for t in said)}


def _normalisers(avatar: Avatar, streams: list[SpeechStream], renderer_motion: np.ndarray) -> None:
    mel = np.concatenate([s.mel for s in streams])
    motion = np.concatenate([s.motion for s in streams])
    generator = avatar.motion_generator
    generator.audio_encoder.mel_mean.fill_(float(mel.mean()))
    generator.audio_encoder.mel_std.fill_(float(mel.std()))
    generator.motion_mean.copy_(torch.from_numpy(motion.mean(0)))
    generator.motion_std.copy_(torch.from_numpy(np.maximum(motion.std(0), 1e-3)))
    avatar.renderer.motion_mean.copy_(torch.from_numpy(renderer_motion.mean(0)))
    avatar.renderer.motion_std.copy_(torch.from_numpy(np.maximum(renderer_motion.std(0), 1e-3)))


@dataclass
class BootstrapResult:
    avatar: Avatar
    report: dict


def run_bootstrap(
    config: BootstrapConfig,
    out: Path,
    cache: Path,
    quiet: bool = False,
    grid: Path | None = None,
    latency_repository: Path | None = None,
    evaluate: bool = True,
) -> BootstrapResult:
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    _ensure_cache(cache)
    spec = config.avatar.spec
    framing = config.framing
    rest = framing.rest_motion()
    drawer = HostDrawer(framing, spec.frame_size)
    timings: dict[str, float] = {}

    # 1. Speech streams (cached).
    t0 = time.perf_counter()
    corpus = SpeechCorpus(config.speech, framing, drawer)
    speech_key = _digest(
        {"v": CACHE_VERSION, "speech": asdict(config.speech), "framing": asdict(framing), "size": spec.frame_size}
    )
    train_streams = corpus.load_or_build(
        cache / f"speech_train_{speech_key}.npz", config.speech.train_streams, 0, vary_voice=True, desc="speech (train)"
    )
    heldout_streams = corpus.load_or_build(
        cache / f"speech_heldout_{speech_key}.npz",
        config.speech.heldout_streams,
        100_000,
        vary_voice=False,
        desc="speech (held out)",
    )
    crossvoice_streams = {
        name: corpus.load_or_build(
            cache / f"speech_voice{i}_{speech_key}.npz",
            config.speech.crossvoice_streams,
            200_000 + 1000 * i,
            vary_voice=False,
            desc=f"speech ({name})",
            voice=voice,
        )
        for i, (name, voice) in enumerate(cross_voices().items())
    }
    timings["speech_data_s"] = time.perf_counter() - t0

    # 2. Renderer frames (cached): half from the speech tracks, half random poses/expressions.
    t0 = time.perf_counter()
    rcfg = config.renderer_data
    rng = np.random.default_rng(rcfg.seed)
    all_motion = np.concatenate([s.motion for s in train_streams])
    n_speech = int(round(rcfg.frames * rcfg.speech_fraction))
    renderer_motion = np.concatenate(
        [
            all_motion[rng.integers(len(all_motion), size=n_speech)],
            random_host_motion(rng, framing, rcfg.frames - n_speech),
        ]
    )
    renderer_motion = renderer_motion[rng.permutation(len(renderer_motion))]
    frames_key = _digest({"v": CACHE_VERSION, "speech": speech_key, "renderer_data": asdict(rcfg)})
    frames = RendererFrames.build(cache / f"renderer_frames_{frames_key}", drawer, renderer_motion)
    timings["renderer_data_s"] = time.perf_counter() - t0

    # 3. The networks: deterministic initialisation, normalisers from the data.
    torch.manual_seed(0)
    avatar = Avatar(config.avatar)
    _normalisers(avatar, train_streams, frames.motion)

    # 4. Motion generator, stage 1 (audio path only).
    t0 = time.perf_counter()
    bank = WindowBank(train_streams, spec, rest)
    gkey = _digest(
        {
            "data": speech_key,
            "avatar": config.avatar.to_dict()["motion_generator"],
            "spec": asdict(spec),
            "train": asdict(config.generator_training),
        }
    )
    gtrainer = GeneratorTrainer(
        avatar.motion_generator, bank, config.generator_training, cache / f"generator_{gkey}.pt", gkey, quiet
    )
    gtrainer.run()
    avatar.motion_generator.load_state_dict(gtrainer.ema_state())
    timings["generator_training_s"] = time.perf_counter() - t0

    # 5. Renderer.
    t0 = time.perf_counter()
    rkey = _digest(
        {
            "data": frames_key,
            "avatar": config.avatar.to_dict()["renderer"],
            "spec": asdict(spec),
            "train": asdict(config.renderer_training),
        }
    )
    rtrainer = RendererTrainer(
        avatar.renderer, frames, config.renderer_training, cache / f"renderer_{rkey}.pt", rkey, quiet
    )
    rtrainer.run()
    avatar.renderer.load_state_dict(rtrainer.ema_state())
    timings["renderer_training_s"] = time.perf_counter() - t0
    avatar.eval()

    report: dict = {
        "parameters": {
            name: parameter_count(avatar.network(name)) for name in ("guest_encoder", "motion_generator", "renderer")
        },
        "losses": {"motion_generator": gtrainer.loss_summary(), "renderer": rtrainer.loss_summary()},
        "data": {
            "train_streams": len(train_streams),
            "heldout_streams": len(heldout_streams),
            "train_frames": int(sum(s.frames for s in train_streams)),
            "heldout_frames": int(sum(s.frames for s in heldout_streams)),
            "renderer_frames": len(frames),
            "heldout_sentences": _sentence_overlap(train_streams, heldout_streams),
        },
    }
    report["parameters"]["total"] = sum(report["parameters"].values())

    # 6. Evaluation on held-out speech.
    if evaluate:
        t0 = time.perf_counter()
        generator = avatar.motion_generator
        seed = config.evaluation.seed
        forced = teacher_forced(generator, heldout_streams, rest, seed)
        rolled = rollout(generator, heldout_streams, rest, seed)  # from neutral_vector(), as the gateway starts
        rolled_rest = rollout(generator, heldout_streams, rest, seed, start_motion=rest)
        report["motion_generator"] = {
            "teacher_forced": motion_metrics(forced, heldout_streams),
            "rollout": motion_metrics(list(rolled), heldout_streams),
            "rollout_from_rest": motion_metrics(list(rolled_rest), heldout_streams),
            "rollout_other_voices": {},
        }
        for name, streams in crossvoice_streams.items():
            metrics = motion_metrics(list(rollout(generator, streams, rest, seed)), streams)
            keep = (
                "jaw_corr_gt",
                "jaw_corr_loudness",
                "jaw_corr_log_loudness",
                "jaw_mean_speaking",
                "jaw_mean_silence",
                "frames",
            )
            report["motion_generator"]["rollout_other_voices"][name] = {k: metrics[k] for k in keep}
        erng = np.random.default_rng(seed)
        count = config.evaluation.renderer_frames
        heldout_motion = np.concatenate([s.motion for s in heldout_streams])
        rolled_flat = rolled.reshape(-1, MOTION_DIM)
        pick_gt = np.sort(erng.choice(len(heldout_motion), size=min(count, len(heldout_motion)), replace=False))
        pick_roll = np.sort(erng.choice(len(rolled_flat), size=min(count, len(rolled_flat)), replace=False))
        report["renderer"] = {
            "heldout_ground_truth_motion": renderer_metrics(avatar.renderer, drawer, heldout_motion[pick_gt]),
            "generator_rollout_motion": renderer_metrics(avatar.renderer, drawer, rolled_flat[pick_roll]),
            "random_motion": renderer_metrics(avatar.renderer, drawer, random_host_motion(erng, framing, count)),
        }
        if grid is not None:
            jaw_order = np.argsort(rolled_flat[:, FIELD_INDEX["jawOpen"]])
            picks = jaw_order[np.linspace(0, len(jaw_order) - 1, 6).astype(int)]
            show = np.concatenate([rolled_flat[picks], random_host_motion(erng, framing, 2)])
            report["grid"] = str(save_grid(avatar.renderer, drawer, show, grid))
        timings["evaluation_s"] = time.perf_counter() - t0

    # 7. The checkpoint.
    timings["total_s"] = time.perf_counter() - started
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    report["training_seconds_including_resumed"] = round(gtrainer.seconds + rtrainer.seconds, 1)
    avatar.config = dataclasses.replace(config.avatar, notes=_notes(config, report))
    save_avatar(avatar, out)
    report["checkpoint_bytes"] = (out / "model.safetensors").stat().st_size
    if latency_repository is not None:
        report["latency"] = measure_latency(out, latency_repository)
    _write_json(
        out / "bootstrap_report.json",
        {
            "config": config.to_dict(),
            "report": report,
            "environment": {"torch": torch.__version__, "python": sys.version.split()[0], "threads": config.threads},
        },
    )
    (out / "model_card.md").write_text(model_card(config, report))
    return BootstrapResult(avatar, report)


def _notes(config: BootstrapConfig, report: dict) -> dict:
    return {
        "trained": True,
        "recipe": "bootstrap (pipeline.train.bootstrap): host speech from espeak-ng + FacePainter renders, no curation",
        "stage": "motion generator stage 1 only (audio path); guest projector zero, guest encoder random",
        "interim": "shipped until issue 4's curated two-stage training produces the default avatar",
        "rest_motion": [round(float(v), 5) for v in config.framing.rest_motion()],
        "framing": asdict(config.framing),
        "identity": "pipeline.synth.cast.HOST_IDENTITY",
        "voice": "pipeline.synth.cast.HOST_VOICE",
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def model_card(config: BootstrapConfig, report: dict) -> str:
    p, data, t = report["parameters"], report["data"], report["timings_s"]
    gen_loss, ren_loss = report["losses"]["motion_generator"], report["losses"]["renderer"]
    g, r, spec = config.generator_training, config.renderer_training, config.avatar.spec
    seen = data.get("heldout_sentences", {})
    lines = [
        "# Default avatar (interim bootstrap)",
        "",
        "**Interim.** This avatar is trained by the *bootstrap* recipe: the audio path of the motion generator",
        "(stage 1) and the renderer, on data generated directly from the synthetic world's components. The",
        "reactive video branch is **not trained** (the guest projector is still zero-initialised, so",
        "`lambda_video` has no effect) and the guest encoder is random. It ships so the service runs out of",
        "the box, until issue 4's curated two-stage training produces the real default avatar.",
        "",
        "## How it was made",
        "",
        "```",
        "scripts/train_default_avatar.sh    # = python -m pipeline.train.bootstrap --out avatars/default ...",
        "```",
        "",
        f"- Motion generator data: {data['train_streams']} streams of {config.speech.stream_seconds:.0f} s "
        f"({data['train_frames']} frames) of the host's voice (espeak-ng, `HOST_VOICE`;",
        f"  {100 * config.speech.voice_variation_probability:.0f} % of the utterances with small rate/pitch changes, "
        f"{100 * config.speech.other_voice_probability:.0f} % in other random espeak-ng voices): talk-show sentences",
        "  separated by silences, random gain and a faint noise floor; 16 kHz log-mel. Targets: the mouth from the",
        "  phonemes (`viseme_tracks`); head motion, brows, gaze and blinks by the synthetic behaviour model's recipe",
        "  (more head motion while talking).",
        "- Windows exactly as serving builds them (`AvatarSpec`, `server/avatar_loop.py`): mel frames",
        "  4(n-past) .. 4(n+K+lookahead)-1 with log-mel silence before the stream, the previous 6 motion frames",
        f"  with Gaussian noise (std U(0, {g.history_noise_max}) in normalised units on the mouth fields, so the",
        f"  model takes the mouth from the audio, not from its history; U(0, {g.history_noise_other_max}) on the",
        f"  others), and in {100 * g.history_reset_probability:.0f} % of the windows the first 1..6 history frames",
        "  replaced by `neutral_vector()`, which is what the gateway starts a session's history from.",
        "- Rectified flow matching (x_t = (1-t) noise + t data, loss = MSE to data - noise), mouth fields weighted",
        f"  {g.mouth_weight:g}x, AdamW, {g.steps} steps of batch {g.batch_size}, EMA weights; "
        f"{config.avatar.motion_generator.sampling_steps} Euler steps at inference.",
        f"- Renderer: {data['renderer_frames']} FacePainter frames of `HOST_IDENTITY` at "
        f"{spec.frame_size}x{spec.frame_size} (half from the speech tracks,",
        f"  half random poses/expressions), face height {100 * config.framing.face_fraction:.0f} % of the frame, "
        f"eyes {100 * config.framing.eye_y:.0f} % from the top; L1 weighted",
        f"  towards eyes and mouth + image-gradient L1, {r.steps} steps of batch {r.batch_size}, EMA weights.",
        "- This avatar's rest motion (config.json notes, `rest_motion`): frontal, neutral, eyes at "
        f"({config.framing.eye_x}, {config.framing.eye_y}), face height {config.framing.face_fraction}.",
        "",
        "## Figures",
        "",
        f"- Parameters: guest encoder {p['guest_encoder']:,}, motion generator {p['motion_generator']:,}, "
        f"renderer {p['renderer']:,}; total {p['total']:,}.",
        f"  Checkpoint {report.get('checkpoint_bytes', 0) / 2**20:.2f} MiB (float32 safetensors).",
        f"- Training time: {t.get('total_s', 0):.0f} s wall on {config.threads} CPU threads (speech data "
        f"{t.get('speech_data_s', 0):.0f} s, renderer frames {t.get('renderer_data_s', 0):.0f} s,",
        f"  generator {t.get('generator_training_s', 0):.0f} s, renderer {t.get('renderer_training_s', 0):.0f} s, "
        f"evaluation {t.get('evaluation_s', 0):.0f} s).",
        f"- Losses (mean of the first / last 5 % of steps): motion generator {gen_loss.get('first_mean')} -> "
        f"{gen_loss.get('last_mean')}; renderer {ren_loss.get('first_mean')} -> {ren_loss.get('last_mean')}.",
    ]
    if "motion_generator" in report:
        tf, ro = report["motion_generator"]["teacher_forced"], report["motion_generator"]["rollout"]
        spread = ", ".join(
            f"{k} {ro['fields'][k]['std'] / max(ro['fields'][k]['gt_std'], 1e-9):.2f}" for k in ("yaw", "pitch", "roll")
        )
        lines += [
            "",
            f"Held-out speech: {data['heldout_streams']} streams, {ro['frames']} frames, pure `HOST_VOICE`; "
            f"{seen.get('count', '?')} sentences,",
            f"{seen.get('also_in_training', '?')} of them also spoken word for word in training (the templates are "
            "shared). `lambda_video` = 0, no partner.",
            "",
            "| | jawOpen corr. with ground truth | with loudness (RMS / 40 ms) | jawOpen MAE "
            "| mean jawOpen speaking / silence |",
            "|---|---|---|---|---|",
            f"| teacher-forced (ground-truth history) | {tf['jaw_corr_gt']} | {tf['jaw_corr_loudness']} "
            f"| {tf['jaw_mae']} | {tf['jaw_mean_speaking']} / {tf['jaw_mean_silence']} |",
            f"| rollout (own output fed back from a `neutral_vector()` history, as the gateway runs it) "
            f"| {ro['jaw_corr_gt']} | {ro['jaw_corr_loudness']} | {ro['jaw_mae']} "
            f"| {ro['jaw_mean_speaking']} / {ro['jaw_mean_silence']} |",
            f"| ground truth itself | 1 | {ro['gt_jaw_corr_loudness']} | 0 | |",
            "",
            f"Rollout: the first frame's face size is {ro['start_scale']} (data {config.framing.face_fraction}, "
            f"the gateway's starting history 0.2); face-size error {ro['scale_error_first_second']} over the",
            f"first second vs {ro['scale_error_after']} afterwards; head-pose spread (std) relative to the data: "
            f"{spread}; per-frame jawOpen change {ro['jaw_step_mean']} (data {ro['gt_jaw_step_mean']}).",
            "",
            "Rollout on held-out speech in voices other than the host's (the gateway gets whatever voice the client",
            "sends):",
            "",
            "| voice (frames) | jawOpen corr. with ground truth | with loudness | with log loudness |",
            "|---|---|---|---|",
        ]
        for name, row in report["motion_generator"]["rollout_other_voices"].items():
            lines.append(
                f"| {name} ({row['frames']}) | {row['jaw_corr_gt']} | {row['jaw_corr_loudness']} "
                f"| {row['jaw_corr_log_loudness']} |"
            )
    if "renderer" in report:
        lines += [
            "",
            "Renderer, face mesh (`FaceGeometryFeaturizer`) on rendered frames:",
            "",
            "| motion source | face found | jawOpen corr. (measured vs commanded) | same on FacePainter frames "
            "| PSNR vs FacePainter |",
            "|---|---|---|---|---|",
        ]
        for name, row in report["renderer"].items():
            lines.append(
                f"| {name.replace('_', ' ')} ({row['frames']}) | {100 * row['face_detect_rate']:.1f} % "
                f"| {row['jaw_corr_commanded']} | {row['reference_jaw_corr_commanded']} | {row['psnr_db']} dB |"
            )
    if "latency" in report:
        lat, info = report["latency"]["median_ms"], report["latency"]
        lines += [
            "",
            f"Per-frame latency, onnxruntime {info['onnxruntime']} CPU, batch 1, median of {info['calls']} calls "
            f"({info['cores']} cores, shared machine):",
            f"guest encoder {lat['guest_encoder']} ms, motion generator {lat['motion_generator']} ms, "
            f"renderer {lat['renderer']} ms; sum {lat['sum']} ms (budget 25 ms).",
        ]
    lines += ["", "All figures: `bootstrap_report.json`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_train_bootstrap_parser(commands) -> None:
    parser = commands.add_parser(
        "train-bootstrap",
        help="train the interim default avatar from the synthetic world's components",
        description="Motion generator stage 1 (audio path) on host speech synthesised with espeak-ng, and the "
        "renderer on FacePainter frames of the host; no curation. Generated data and training "
        "checkpoints are cached (rerunning resumes). Writes config.json, model.safetensors, "
        "model_card.md and bootstrap_report.json to OUT.",
    )
    parser.add_argument("--out", type=Path, required=True, help="avatar checkpoint directory to write")
    parser.add_argument(
        "--cache", type=Path, default=Path("build/bootstrap_cache"), help="generated data + checkpoints"
    )
    parser.add_argument("--tiny", action="store_true", help="seconds-scale smoke run (tiny networks, few steps)")
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--renderer-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 2)")
    parser.add_argument("--grid", type=Path, default=None, help="write a PNG: rendered frames over FacePainter frames")
    parser.add_argument(
        "--latency-repo",
        type=Path,
        default=None,
        help="also export to this model repository and time each network (onnxruntime, batch 1)",
    )
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=_run_train_bootstrap)


def _run_train_bootstrap(args) -> int:
    config = tiny_bootstrap_config() if args.tiny else BootstrapConfig()
    if args.generator_steps is not None:
        config = dataclasses.replace(
            config, generator_training=dataclasses.replace(config.generator_training, steps=args.generator_steps)
        )
    if args.renderer_steps is not None:
        config = dataclasses.replace(
            config, renderer_training=dataclasses.replace(config.renderer_training, steps=args.renderer_steps)
        )
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    result = run_bootstrap(
        config,
        args.out,
        args.cache,
        quiet=args.quiet,
        grid=args.grid,
        latency_repository=args.latency_repo,
        evaluate=not args.no_eval,
    )
    print(json.dumps(result.report, indent=2, default=float))
    print(f"avatar: {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train.bootstrap")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_bootstrap_parser(commands)
    args = parser.parse_args(["train-bootstrap", *(argv if argv is not None else sys.argv[1:])])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
