"""How the synthetic people move: speaking, listening, spontaneous guest cues, reactive host rules.

Every person gets a behaviour track (F, MOTION_DIM) in *stage space*: yaw/pitch/roll as seen by a
camera straight in front of the stage (azimuth 0), tx/ty the head's offset from its rest position in
face heights, scale a lean factor (1 = at rest), expressions as drawn. The renderer turns these into
image-space poses per shot.

The host follows documented rules while listening (the ground truth the model issue measures
reactivity against). Each rule: a guest cue, then a host response after a lag drawn uniformly from
the rule's window. See `RULES` and docs/synthetic_world.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from f2f.motion import FIELD_INDEX, clip_expressions, neutral_vector

from .script import AudioScript, SpeechSegment
from .style import BROADCAST, WorldStyle
from .visemes import viseme_tracks


@dataclass(frozen=True)
class ReactionRule:
    """A host response to a guest cue, after a lag in [lag_min_s, lag_max_s]."""

    name: str
    cue: str
    response: str
    lag_min_s: float
    lag_max_s: float
    description: str


RULES: dict[str, ReactionRule] = {
    rule.name: rule
    for rule in (
        ReactionRule("nod_after_pause", "guest_pause", "host_nod", 0.2, 0.6,
                     "A guest pause of >= 0.3 s inside or at the end of a turn: the host nods "
                     "(pitch +8..12 deg and back over ~0.5 s)."),
        ReactionRule("smile_back", "guest_smile", "host_smile", 0.3, 0.8,
                     "The guest starts smiling: the host smiles back (0.6..0.9 of the guest's "
                     "intensity) for about as long."),
        ReactionRule("mirror_tilt", "guest_tilt", "host_tilt", 0.4, 0.9,
                     "The guest tilts the head (roll change >= 6 deg): the host's roll moves to 0.6 "
                     "times the guest's roll, the same way round as the camera sees it."),
        ReactionRule("look_at_speaker", "guest_speech_onset", "host_gaze_shift", 0.1, 0.4,
                     "A guest starts a turn: the host turns head and eyes to that guest."),
    )
}


@dataclass
class ReactionEvent:
    rule: str
    cue_person: str
    cue_time_s: float
    response_person: str
    response_time_s: float
    response_duration_s: float

    def to_json(self) -> dict:
        rule = RULES[self.rule]
        return {
            "rule": self.rule,
            "cue": rule.cue,
            "cue_person": self.cue_person,
            "cue_time": round(self.cue_time_s, 4),
            "response": rule.response,
            "response_person": self.response_person,
            "response_time": round(self.response_time_s, 4),
            "response_duration": round(self.response_duration_s, 4),
        }


@dataclass
class Seat:
    """Where a person sits on stage (metres) and who they face by default."""

    person_id: str
    role: str
    x: float
    head_y: float


@dataclass
class BehaviourResult:
    tracks: dict[str, np.ndarray]  # person -> (F, MOTION_DIM) stage-space motion
    speaking: dict[str, np.ndarray]  # person -> (F,) bool
    events: list[ReactionEvent]
    guest_cues: list[dict]


# --- small signal helpers -----------------------------------------------------------------

def smooth(signal: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian smoothing along the first axis (edges padded by reflection)."""
    if sigma_frames <= 0:
        return signal
    radius = int(3 * sigma_frames) + 1
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_frames) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(signal, (radius, radius), mode="reflect")
    return np.convolve(padded, kernel, mode="valid")


def smooth_noise(rng: np.random.Generator, frames: int, sigma_frames: float, amplitude: float) -> np.ndarray:
    """Slow random drift with standard deviation ~amplitude.  # (frames,)"""
    raw = rng.standard_normal(frames + 1)[:frames]
    drift = smooth(raw, sigma_frames)
    std = drift.std() or 1.0
    return drift / std * amplitude


def bump(times: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 envelope with smooth (cosine) ramps.  # (F,)"""
    t = times - start
    up = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / max(rise, 1e-3), 0, 1))
    down = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - rise - hold) / max(fall, 1e-3), 0, 1))
    return np.where(t < 0, 0.0, np.where(t < rise + hold, up, down))


def speaking_mask(segments: list[SpeechSegment], person_id: str, times: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(times), bool)
    for seg in segments:
        if seg.person_id == person_id:
            mask |= (times >= seg.start_s) & (times < seg.end_s)
    return mask


def busy_at(mask: np.ndarray, times: np.ndarray, start: float, end: float) -> bool:
    window = (times >= start) & (times <= end)
    return bool(mask[window].any())


# --- the model ------------------------------------------------------------------------------

class BehaviourModel:
    """Builds every person's stage-space motion for one episode, and the host's reaction events."""

    LOOK_YAW_DEG = 18.0  # how far a seated person turns to face a neighbour

    def __init__(self, seats: list[Seat], script: AudioScript, times: np.ndarray, rng: np.random.Generator,
                 style: WorldStyle = BROADCAST):
        self.seats = {seat.person_id: seat for seat in seats}
        self.script = script
        self.times = times  # (F,) seconds of each video frame
        self.rng = rng
        self.style = style
        self.frames = len(times)
        self.fps = 1.0 / float(times[1] - times[0]) if len(times) > 1 else 25.0
        self.host_id = next(seat.person_id for seat in seats if seat.role == "host")
        self.guest_ids = [seat.person_id for seat in seats if seat.role != "host"]

    def build(self) -> BehaviourResult:
        speaking = {pid: speaking_mask(self.script.segments, pid, self.times) for pid in self.seats}
        tracks = {pid: self._base_track(pid, speaking) for pid in self.seats}
        guest_cues: list[dict] = []
        for gid in self.guest_ids:
            guest_cues += self._guest_spontaneous(gid, tracks[gid], speaking[gid])
        guest_cues += self._guest_pauses()
        guest_cues += self._guest_onsets()
        guest_cues.sort(key=lambda cue: (cue["time"], cue["person"], cue["kind"]))
        events = self._host_reactions(tracks, speaking, guest_cues)
        for track in tracks.values():
            clip_expressions(track)
        return BehaviourResult(tracks, speaking, events, guest_cues)

    # -- everyone ----------------------------------------------------------------------------
    def _facing_yaw(self, person_id: str, target_id: str) -> float:
        me, other = self.seats[person_id], self.seats[target_id]
        return self.LOOK_YAW_DEG * float(np.sign(other.x - me.x))

    def _base_track(self, person_id: str, speaking: dict[str, np.ndarray]) -> np.ndarray:
        rng, times, frames = self.rng, self.times, self.frames
        track = np.tile(neutral_vector(), (frames, 1)).astype(np.float64)
        track[:, FIELD_INDEX["scale"]] = 1.0
        talking = speaking[person_id].astype(float)
        activity = smooth(talking, 0.6 * self.fps)  # 0 listening .. 1 talking, smoothed

        # Lips from phonemes (visemes); laughs open the jaw and smile.
        own = [seg for seg in self.script.segments if seg.person_id == person_id]
        phonemes = [p for seg in own for p in seg.phonemes]
        mouth = viseme_tracks(phonemes, times)
        track[:, FIELD_INDEX["jawOpen"]] = mouth["jawOpen"]
        track[:, FIELD_INDEX["mouthPucker"]] = mouth["mouthPucker"]
        stretch = 0.25 * mouth["mouthStretch"]
        for seg in own:
            if seg.kind == "laugh":
                envelope = bump(times, seg.start_s - 0.1, 0.15, seg.end_s - seg.start_s, 0.4)
                stretch = np.maximum(stretch, 0.8 * envelope)
        track[:, FIELD_INDEX["mouthSmileLeft"]] = stretch
        track[:, FIELD_INDEX["mouthSmileRight"]] = stretch

        # Guests look at whoever else talks (else the host); the host's gaze follows his rules.
        track[:, FIELD_INDEX["yaw"]] = smooth_noise(rng, frames, 1.2 * self.fps, 3.0)
        if person_id != self.host_id:
            target = self._gaze_targets(person_id, speaking)
            yaw_goal = smooth(np.array([self._facing_yaw(person_id, t) for t in target]), 0.15 * self.fps)
            track[:, FIELD_INDEX["yaw"]] += yaw_goal
            track[:, FIELD_INDEX["eyeLookX"]] = np.clip(yaw_goal / self.LOOK_YAW_DEG * 0.35, -1, 1)
        track[:, FIELD_INDEX["eyeLookY"]] = smooth_noise(rng, frames, 0.8 * self.fps, 0.08)

        # Talking heads move more: emphasis nods and sways scale with activity.
        track[:, FIELD_INDEX["pitch"]] = (smooth_noise(rng, frames, 0.25 * self.fps, 3.0) * (0.3 + activity)
                                          + smooth_noise(rng, frames, 2.0 * self.fps, 2.0))
        track[:, FIELD_INDEX["roll"]] = smooth_noise(rng, frames, 1.5 * self.fps, 1.5) * (0.5 + activity)
        track[:, FIELD_INDEX["yaw"]] += smooth_noise(rng, frames, 0.4 * self.fps, 2.5) * activity
        track[:, FIELD_INDEX["tx"]] = smooth_noise(rng, frames, 2.0 * self.fps, 0.04)
        track[:, FIELD_INDEX["ty"]] = smooth_noise(rng, frames, 2.5 * self.fps, 0.02)
        track[:, FIELD_INDEX["scale"]] = 1.0 + smooth_noise(rng, frames, 3.0 * self.fps, 0.02)
        track[:, FIELD_INDEX["browInnerUp"]] = np.clip(
            smooth_noise(rng, frames, 0.5 * self.fps, 0.25) * activity, 0, 1)

        # Blinks: a Poisson process, ~17 a minute, each ~150 ms.
        blink = np.zeros(frames)
        t = rng.exponential(3.5)
        while t < times[-1]:
            blink = np.maximum(blink, bump(times, t, 0.06, 0.04, 0.08))
            t += 0.4 + rng.exponential(3.3)
        track[:, FIELD_INDEX["eyeBlinkLeft"]] = blink
        track[:, FIELD_INDEX["eyeBlinkRight"]] = blink
        return track

    def _gaze_targets(self, person_id: str, speaking: dict[str, np.ndarray]) -> list[str]:
        others = [pid for pid in self.seats if pid != person_id]
        default = self.host_id if person_id != self.host_id else self.guest_ids[0]
        targets, current = [], default
        for i in range(self.frames):
            talking = [pid for pid in others if speaking[pid][i]]
            if talking and current not in talking:
                current = talking[0]
            targets.append(current)
        return targets

    # -- guests --------------------------------------------------------------------------------
    def _guest_spontaneous(self, guest_id: str, track: np.ndarray, talking: np.ndarray) -> list[dict]:
        """Smiles and head tilts at random moments: the cues the host may react to."""
        rng, times = self.rng, self.times
        cues: list[dict] = []
        duration = float(times[-1])
        smile = np.zeros(self.frames)
        t = rng.uniform(2.0, 8.0)
        while t < duration - 2.0:
            length = rng.uniform(1.2, 3.0)
            level = rng.uniform(0.55, 1.0)
            smile = np.maximum(smile, level * bump(times, t, 0.25, length, 0.4))
            cues.append({"kind": "guest_smile", "person": guest_id, "time": float(t), "duration": float(length),
                         "value": float(level)})
            t += length + rng.uniform(*self.style.smile_gap_s)
        for side in ("Left", "Right"):
            column = FIELD_INDEX[f"mouthSmile{side}"]
            track[:, column] = np.maximum(track[:, column], smile)

        roll = np.zeros(self.frames)
        t, level = rng.uniform(3.0, 9.0), 0.0
        while t < duration - 2.0:
            new_level = float(np.clip(level + rng.choice([-1, 1]) * rng.uniform(7.0, 13.0), -14.0, 14.0))
            if abs(new_level - level) >= 6.0:
                ramp = bump(times, t, 0.35, 1e6, 0.0)
                roll = roll * (1 - ramp) + new_level * ramp
                cues.append({"kind": "guest_tilt", "person": guest_id, "time": float(t), "value": new_level})
                level = new_level
            t += rng.uniform(*self.style.tilt_gap_s)
        track[:, FIELD_INDEX["roll"]] += roll
        return cues

    def _guest_pauses(self) -> list[dict]:
        """A guest pause: a gap >= 0.3 s after one of their speech segments, nobody else talking."""
        cues = []
        speech = [s for s in self.script.segments if s.kind == "speech"]
        for seg in speech:
            if seg.person_id == self.host_id:
                continue
            following = [s for s in self.script.segments
                         if s.start_s > seg.start_s and s is not seg and s.start_s < seg.end_s + 0.3]
            if not following and seg.end_s + 0.3 < self.times[-1]:
                cues.append({"kind": "guest_pause", "person": seg.person_id, "time": float(seg.end_s)})
        return cues

    def _guest_onsets(self) -> list[dict]:
        cues = []
        for turn in self.script.turns:
            if turn.person_id != self.host_id:
                cues.append({"kind": "guest_speech_onset", "person": turn.person_id, "time": float(turn.start_s)})
        return cues

    # -- host ----------------------------------------------------------------------------------
    def _host_reactions(self, tracks, speaking, guest_cues) -> list[ReactionEvent]:
        host = tracks[self.host_id]
        host_talking = speaking[self.host_id]
        times, rng = self.times, self.rng
        by_cue = {rule.cue: rule for rule in RULES.values()}
        events: list[ReactionEvent] = []
        tilt_level = 0.0
        for cue in guest_cues:
            rule = by_cue[cue["kind"]]
            lag = rng.uniform(rule.lag_min_s, rule.lag_max_s)
            start = cue["time"] + lag
            if rule.name == "nod_after_pause":
                duration = rng.uniform(0.45, 0.6)
            elif rule.name == "smile_back":
                duration = cue["duration"]
            elif rule.name == "mirror_tilt":
                duration = 0.4
            else:
                duration = 0.25
            if start + duration >= times[-1] or busy_at(host_talking, times, start, start + duration):
                continue  # the host reacts only while listening
            if rule.name == "nod_after_pause":
                depth = rng.uniform(8.0, 12.0)
                shape = np.sin(np.pi * np.clip((times - start) / duration, 0, 1))
                host[:, FIELD_INDEX["pitch"]] += depth * shape
            elif rule.name == "smile_back":
                level = cue["value"] * rng.uniform(0.6, 0.9)
                envelope = level * bump(times, start, 0.25, duration, 0.4)
                for side in ("Left", "Right"):
                    column = FIELD_INDEX[f"mouthSmile{side}"]
                    host[:, column] = np.maximum(host[:, column], envelope)
            elif rule.name == "mirror_tilt":
                target = 0.6 * cue["value"]
                ramp = bump(times, start, duration, 1e6, 0.0)
                host[:, FIELD_INDEX["roll"]] += (target - tilt_level) * ramp
                tilt_level = target
            else:  # look_at_speaker: applied below, with the host's own gaze changes
                pass
            events.append(ReactionEvent(rule.name, cue["person"], cue["time"], self.host_id, start, duration))
        self._host_gaze(host, host_talking, [e for e in events if e.rule == "look_at_speaker"])
        return events

    def _host_gaze(self, host: np.ndarray, host_talking: np.ndarray, looks: list[ReactionEvent]) -> None:
        """The host's head and eyes: towards the guest he listens to (switching only when the
        look_at_speaker rule fires), half towards the audience while he talks himself."""
        times = self.times
        facing = self._facing_yaw(self.host_id, self.guest_ids[0])
        changes = [(0.0, facing, 0.01)]
        onsets = np.flatnonzero(np.diff(host_talking.astype(int)) == 1) + 1
        for i in onsets:
            changes.append((float(times[i]), None, 0.4))  # None: towards the audience
        for event in looks:
            changes.append((event.response_time_s, self._facing_yaw(self.host_id, event.cue_person),
                            event.response_duration_s))
        changes.sort(key=lambda change: change[0])
        goal = np.zeros(self.frames)
        listening_to = facing
        for start, target, ramp_s in changes:
            if target is None:
                target = 0.35 * listening_to
            else:
                listening_to = target
            ramp = bump(times, start, ramp_s, 1e6, 0.0)
            goal = goal * (1 - ramp) + target * ramp
        host[:, FIELD_INDEX["yaw"]] += goal
        host[:, FIELD_INDEX["eyeLookX"]] = np.clip(goal / self.LOOK_YAW_DEG * 0.35, -1, 1)
