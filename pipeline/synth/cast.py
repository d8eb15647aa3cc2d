"""Who is on the show: the constant host, an episode's guests, and the studio audience.

The host is the same person in every episode and every seed (like the F2F-JF host); guests and the
audience are drawn from the episode's random generator. Identities are kept clearly apart (face
shape, skin, hair, glasses, beard, voice) because the curation pipeline must tell them apart with
real face-identity and speaker-embedding models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .face_drawing import FaceIdentity
from .speech import Voice, sample_voices

SKIN_TONES_BGR = [(185, 205, 235), (150, 180, 220), (120, 155, 200), (95, 130, 180), (70, 100, 145), (50, 75, 110)]
HAIR_BGR = [(20, 20, 25), (30, 40, 70), (40, 70, 120), (80, 120, 170), (140, 150, 160), (30, 50, 140)]
IRIS_BGR = [(90, 70, 40), (60, 80, 50), (40, 50, 70), (120, 100, 60)]
LIP_BGR = [(95, 100, 175), (80, 80, 150), (90, 90, 190), (70, 75, 120)]
CLOTHING_BGR = [(90, 60, 40), (40, 40, 40), (60, 60, 150), (130, 100, 50), (70, 120, 70), (160, 160, 160), (40, 80, 150)]

HOST_ID = "host"

# The host: a fixed identity and voice (short dark hair, no glasses, clean-shaven, dark suit).
HOST_IDENTITY = FaceIdentity(
    face_width=1.0, jaw_width=1.05, skin_bgr=(150, 180, 220), hair_bgr=(30, 40, 70), hair_style="short",
    hairline=-0.41, eye_spacing=1.0, eye_size=1.0, iris_bgr=(90, 70, 40), brow_bgr=(35, 40, 60),
    brow_thickness=0.03, brow_arch=0.03, nose_length=1.0, nose_width=1.0, lip_fullness=1.0,
    lip_bgr=(95, 100, 175), glasses="none", beard="none", clothing_bgr=(60, 35, 25),
)
HOST_VOICE = Voice(name="en-us+m3", pitch=45, pitch_range=60, rate=165)


@dataclass(frozen=True)
class Person:
    person_id: str
    role: str  # host | guest | audience
    identity: FaceIdentity
    voice: Voice | None

    def to_json(self) -> dict:
        return {
            "id": self.person_id,
            "role": self.role,
            "identity": dataclasses.asdict(self.identity),
            "voice": dataclasses.asdict(self.voice) if self.voice else None,
        }


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.abs(np.subtract(a, b)).sum())


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    hair_style = _pick(rng, ["short", "short", "long", "long", "bald", "curly"])
    skin = _pick(rng, SKIN_TONES_BGR)
    # Hair must stand out from the skin, or the head reads as one blob to a face detector.
    hair_options = [h for h in HAIR_BGR if _contrast(h, skin) >= 160] or [HAIR_BGR[0]]
    return FaceIdentity(
        face_width=float(rng.uniform(0.9, 1.1)),
        jaw_width=float(rng.uniform(0.85, 1.15)),
        skin_bgr=skin,
        hair_bgr=_pick(rng, hair_options),
        hair_style=hair_style,
        hairline=float(rng.uniform(-0.44, -0.34)),
        eye_spacing=float(rng.uniform(0.92, 1.08)),
        eye_size=float(rng.uniform(0.9, 1.12)),
        iris_bgr=_pick(rng, IRIS_BGR),
        brow_bgr=_pick(rng, HAIR_BGR[:4]),
        brow_thickness=float(rng.uniform(0.02, 0.036)),
        brow_arch=float(rng.uniform(0.01, 0.045)),
        nose_length=float(rng.uniform(0.9, 1.12)),
        nose_width=float(rng.uniform(0.85, 1.2)),
        lip_fullness=float(rng.uniform(0.8, 1.25)),
        lip_bgr=_pick(rng, LIP_BGR),
        glasses=_pick(rng, ["none", "none", "none", "round", "square"]),
        beard="none" if hair_style == "long" else _pick(rng, ["none", "none", "stubble", "full", "goatee"]),
        clothing_bgr=_pick(rng, CLOTHING_BGR),
    )


def identity_distance(a: FaceIdentity, b: FaceIdentity) -> float:
    """A rough visual distance: categorical differences count 1, colours and shapes scaled."""
    d = 0.0
    d += float(np.abs(np.subtract(a.skin_bgr, b.skin_bgr)).sum()) / 90.0
    d += float(np.abs(np.subtract(a.hair_bgr, b.hair_bgr)).sum()) / 120.0
    d += (a.hair_style != b.hair_style) + (a.glasses != b.glasses) + (a.beard != b.beard)
    d += abs(a.face_width - b.face_width) * 5 + abs(a.jaw_width - b.jaw_width) * 3
    return d


def sample_guests(rng: np.random.Generator, count: int, avoid: list[FaceIdentity]) -> list[FaceIdentity]:
    """Guests that look clearly unlike the host and each other."""
    chosen: list[FaceIdentity] = []
    while len(chosen) < count:
        candidate = sample_identity(rng)
        if all(identity_distance(candidate, other) >= 2.0 for other in avoid + chosen):
            chosen.append(candidate)
    return chosen


def build_cast(rng: np.random.Generator, guest_count: int, audience_count: int) -> list[Person]:
    host = Person(HOST_ID, "host", HOST_IDENTITY, HOST_VOICE)
    guest_faces = sample_guests(rng, guest_count, [HOST_IDENTITY])
    voices = sample_voices(rng, guest_count, avoid=[HOST_VOICE])
    guests = [Person(f"guest_{i + 1}", "guest", face, voice)
              for i, (face, voice) in enumerate(zip(guest_faces, voices))]
    audience = [Person(f"audience_{i + 1}", "audience", sample_identity(rng), None) for i in range(audience_count)]
    return [host, *guests, *audience]
