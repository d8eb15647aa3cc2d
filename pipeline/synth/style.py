"""World styles: how a synthetic series is cast, written and shot. The reaction rules never change.

- `broadcast` (the default): a talk show as television cuts it — panels of 1-3 guests, close-ups,
  reverse shots, audience cutaways; only about a fifth of the show frames the host with one guest.
  This is the world curation is measured on (docs/curation.md).
- `interview`: a one-guest interview recorded for training an avatar — the camera mostly holds the
  host and the guest together, the guest does most of the talking (so the host listens, which is when
  the rules apply) and is more expressive (smiles and head tilts come more often). Per raw minute it
  yields several times the curated two-person footage and reaction events of `broadcast`; the
  default avatar is trained on it (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass

SHOW_SHOT_KINDS = ("closeup", "reverse", "wide", "two_shot", "audience")


@dataclass(frozen=True)
class WorldStyle:
    name: str
    guest_count_weights: tuple[float, float, float]  # P(1, 2, 3 guests)
    show_shot_weights: tuple[float, ...]  # over SHOW_SHOT_KINDS while the show runs
    answer_sentence_weights: tuple[float, float, float, float]  # P(1..4 sentences per guest answer)
    smile_gap_s: tuple[float, float]  # a guest's next smile starts this long after the last ends
    tilt_gap_s: tuple[float, float]  # a guest's next head-tilt attempt comes this long after the last


BROADCAST = WorldStyle(
    name="broadcast",
    guest_count_weights=(0.6, 0.25, 0.15),
    show_shot_weights=(0.38, 0.17, 0.17, 0.18, 0.10),
    answer_sentence_weights=(0.15, 0.35, 0.3, 0.2),
    smile_gap_s=(4.0, 12.0),
    tilt_gap_s=(2.5, 7.0),
)

INTERVIEW = WorldStyle(
    name="interview",
    guest_count_weights=(1.0, 0.0, 0.0),
    show_shot_weights=(0.08, 0.04, 0.25, 0.60, 0.03),
    answer_sentence_weights=(0.0, 0.15, 0.4, 0.45),
    smile_gap_s=(1.5, 4.5),
    tilt_gap_s=(1.2, 3.0),
)

STYLES = {style.name: style for style in (BROADCAST, INTERVIEW)}


def style_named(name: str) -> WorldStyle:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown world style {name!r}; choose from {', '.join(STYLES)}") from None
