"""The director: a shot list for an episode (what each camera frames, when it cuts, zooms, pans).

Shot kinds, as a talk show cuts them and as the F2F-JF vetting stage has to sort them out:
- `wide`: everyone on stage; `two_shot`: the host and one guest;
- `closeup`: one person; `reverse`: a close-up of the listener from the other side, with the
  speaker's shoulder out of focus in the foreground (no face);
- `audience`: a cutaway to the studio audience (three or more faces);
- `stage`: the band stand with nobody on it (no faces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stage import BAND_X, EYE_HEIGHT_M, FACE_HEIGHT_M, Window
from .behaviour import Seat
from .style import BROADCAST, SHOW_SHOT_KINDS, WorldStyle

CLOSEUP_AZIMUTH_DEG = 18.0  # close-up cameras stand off-axis, towards the person being talked to
REVERSE_GAZE_DEG = 18.0  # how far a listener turns towards the speaker (BehaviourModel.LOOK_YAW_DEG)


@dataclass(frozen=True)
class Shot:
    index: int
    kind: str
    start_frame: int
    end_frame: int  # exclusive
    subject: str | None  # the person a closeup/reverse shot frames
    azimuth_deg: float  # camera direction: image yaw = stage yaw - azimuth
    window_start: Window
    window_end: Window
    foreground_side: int = 0  # reverse shots: -1 shoulder on the left, +1 on the right

    def window_at(self, frame: int) -> Window:
        span = max(self.end_frame - self.start_frame - 1, 1)
        return self.window_start.lerp(self.window_end, (frame - self.start_frame) / span)

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "kind": self.kind,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "subject": self.subject,
            "azimuth_deg": round(self.azimuth_deg, 3),
            "window_start": [round(v, 4) for v in (self.window_start.cx, self.window_start.cy, self.window_start.width)],
            "window_end": [round(v, 4) for v in (self.window_end.cx, self.window_end.cy, self.window_end.width)],
        }


class ShotPlanner:
    """Cuts an episode into shots, favouring the person speaking, with music-time cutaways."""

    def __init__(self, seats: list[Seat], size: tuple[int, int], fps: float, rng: np.random.Generator,
                 style: WorldStyle = BROADCAST):
        self.seats = {seat.person_id: seat for seat in seats}
        self.host_id = next(seat.person_id for seat in seats if seat.role == "host")
        self.guest_ids = [seat.person_id for seat in seats if seat.role != "host"]
        self.aspect = size[0] / size[1]
        self.fps = fps
        self.rng = rng
        self.style = style

    def plan(self, frame_count: int, speaker_at: list[str | None], show_start_s: float, show_end_s: float) -> list[Shot]:
        """`speaker_at[i]`: who talks in frame i (None: nobody). Music runs outside [start, end)."""
        rng, shots, frame = self.rng, [], 0
        last_speaker = self.host_id
        while frame < frame_count:
            t = frame / self.fps
            speaker = speaker_at[frame] or last_speaker
            last_speaker = speaker
            if t < show_start_s or t >= show_end_s:
                kind = str(rng.choice(["stage", "audience", "wide"], p=[0.3, 0.4, 0.3]))
            else:
                kind = str(rng.choice(list(SHOW_SHOT_KINDS), p=list(self.style.show_shot_weights)))
            seconds = rng.uniform(1.5, 3.0) if kind in ("audience", "stage") else rng.uniform(2.0, 6.5)
            end = min(frame_count, frame + max(int(seconds * self.fps), 1))
            if frame_count - end < self.fps:  # no slivers at the end
                end = frame_count
            shots.append(self._shot(len(shots), kind, frame, end, speaker))
            frame = end
        return shots

    def _shot(self, index: int, kind: str, start: int, end: int, speaker: str) -> Shot:
        rng = self.rng
        subject, azimuth, side = None, 0.0, 0
        if kind == "closeup":
            subject = speaker
            window = self._closeup(subject)
            azimuth = self._closeup_azimuth(subject)
        elif kind == "reverse":
            subject = self._listener(speaker)
            window = self._closeup(subject)
            # Over the speaker's shoulder: the listener looks at the speaker, so nearly at this camera.
            side = 1 if self.seats[subject].x < self.seats[speaker].x else -1
            azimuth = 0.8 * REVERSE_GAZE_DEG * side
        elif kind == "two_shot":
            guest = speaker if speaker != self.host_id else self.guest_ids[int(rng.integers(len(self.guest_ids)))]
            window = self._covering([self.host_id, guest])
        elif kind == "wide":
            window = self._covering(list(self.seats))
        elif kind == "audience":
            window = Window(float(rng.uniform(-2.2, 2.2)), -2.1 + float(rng.uniform(-0.1, 0.1)), float(rng.uniform(2.0, 3.2)))
        else:  # stage
            window = Window(float(np.mean(BAND_X)), -1.1, float(rng.uniform(1.6, 2.2)))
        # Slow zoom and pan in most shots.
        end_window = window
        if rng.random() < 0.6:
            end_window = Window(window.cx + float(rng.uniform(-0.03, 0.03)) * window.width, window.cy,
                                window.width * float(rng.uniform(0.9, 1.1)))
        return Shot(index, kind, start, end, subject, azimuth, window, end_window, side)

    def _listener(self, speaker: str) -> str:
        if speaker == self.host_id:
            return self.guest_ids[int(self.rng.integers(len(self.guest_ids)))]
        return self.host_id

    def _closeup_azimuth(self, person: str) -> float:
        # The camera sits on the side of the people the subject talks to.
        return -CLOSEUP_AZIMUTH_DEG if person == self.host_id else CLOSEUP_AZIMUTH_DEG

    def _closeup(self, person: str) -> Window:
        seat = self.seats[person]
        face_fraction = float(self.rng.uniform(0.26, 0.40))  # face height / frame height
        height = FACE_HEIGHT_M / face_fraction
        return Window(seat.x, seat.head_y + 0.12 * height, height * self.aspect)

    def _covering(self, people: list[str]) -> Window:
        xs = [self.seats[p].x for p in people]
        width = max(max(xs) - min(xs) + 1.2, 2.0)
        height = width / self.aspect
        return Window(0.5 * (max(xs) + min(xs)), EYE_HEIGHT_M + 0.22 * height, width)
