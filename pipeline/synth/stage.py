"""The studio: a fixed set (backdrop, couch, desk, band stand) and where people sit.

World coordinates are metres: x to the right as the front camera sees the stage, y down, the floor at
y = 0. The backdrop is one large image in world space; a camera window picks part of it per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .behaviour import Seat

PIXELS_PER_METRE = 250
WORLD_X = (-4.5, 4.5)
WORLD_Y = (-3.4, 0.2)
FACE_HEIGHT_M = 0.22  # forehead top to chin
EYE_HEIGHT_M = -1.22  # seated eye height (y is down, floor at 0)
HOST_X = 0.95
GUEST_XS = (-0.3, -0.95, -1.6)
DESK = ((0.40, -0.78), (1.75, -0.78), (1.85, 0.0), (0.30, 0.0))  # a quad in front of the host
BAND_X = (2.6, 4.2)


@dataclass(frozen=True)
class Window:
    """What a camera sees: a world rectangle (centre, width; height follows the frame's aspect)."""

    cx: float
    cy: float
    width: float

    def lerp(self, other: "Window", a: float) -> "Window":
        return Window(self.cx + (other.cx - self.cx) * a, self.cy + (other.cy - self.cy) * a,
                      self.width + (other.width - self.width) * a)


def seats_for(guest_ids: list[str], host_id: str) -> list[Seat]:
    seats = [Seat(host_id, "host", HOST_X, EYE_HEIGHT_M)]
    for gid, x in zip(guest_ids, GUEST_XS):
        seats.append(Seat(gid, "guest", x, EYE_HEIGHT_M + 0.03))
    return seats


def world_to_image(window: Window, size: tuple[int, int]) -> np.ndarray:
    """Affine (2, 3) mapping world metres to image pixels for a window."""
    width, height = size
    s = width / window.width
    return np.array([[s, 0.0, width / 2 - s * window.cx], [0.0, s, height / 2 - s * window.cy]])


class StudioSet:
    """Renders the set behind and in front of the people for any camera window."""

    def __init__(self, seed: int = 20261121):
        rng = np.random.default_rng(seed)  # the set is the same in every episode
        self.backdrop = self._paint_backdrop(rng)
        self.audience_backdrop = self._paint_audience_backdrop()

    def background(self, window: Window, size: tuple[int, int], audience: bool = False) -> np.ndarray:
        image = self.audience_backdrop if audience else self.backdrop
        to_image = world_to_image(window, size)
        # backdrop pixel -> world: x = X / ppm + WORLD_X[0]
        from_backdrop = np.array([[1 / PIXELS_PER_METRE, 0, WORLD_X[0]], [0, 1 / PIXELS_PER_METRE, WORLD_Y[0]], [0, 0, 1]])
        matrix = to_image @ from_backdrop
        return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def draw_foreground(self, frame: np.ndarray, window: Window) -> None:
        """The host's desk, drawn over the host's body."""
        to_image = world_to_image(window, (frame.shape[1], frame.shape[0]))
        quad = np.array(DESK) @ to_image[:, :2].T + to_image[:, 2]
        cv2.fillConvexPoly(frame, np.round(quad * 16).astype(np.int32), (40, 55, 85), cv2.LINE_AA, 4)
        top = np.array([DESK[0], DESK[1], (DESK[1][0], DESK[1][1] + 0.05), (DESK[0][0], DESK[0][1] + 0.05)])
        top_px = top @ to_image[:, :2].T + to_image[:, 2]
        cv2.fillConvexPoly(frame, np.round(top_px * 16).astype(np.int32), (70, 95, 135), cv2.LINE_AA, 4)

    # -- painting, once ----------------------------------------------------------------------
    def _canvas(self) -> tuple[np.ndarray, callable]:
        w = int((WORLD_X[1] - WORLD_X[0]) * PIXELS_PER_METRE)
        h = int((WORLD_Y[1] - WORLD_Y[0]) * PIXELS_PER_METRE)
        canvas = np.zeros((h, w, 3), np.uint8)

        def px(x: float, y: float) -> tuple[int, int]:
            return int((x - WORLD_X[0]) * PIXELS_PER_METRE), int((y - WORLD_Y[0]) * PIXELS_PER_METRE)

        return canvas, px

    def _paint_backdrop(self, rng: np.random.Generator) -> np.ndarray:
        canvas, px = self._canvas()
        h, w = canvas.shape[:2]
        ramp = np.linspace(0, 1, h)[:, None]
        canvas[:] = (np.array([70, 40, 30]) * (1 - ramp) + np.array([110, 70, 50]) * ramp)[:, None, :].astype(np.uint8)
        # A night skyline panel behind the couch and desk.
        x0, y0 = px(-3.2, -3.0)
        x1, y1 = px(2.4, -1.0)
        canvas[y0:y1, x0:x1] = (60, 25, 15)
        for _ in range(70):
            bw = int(rng.uniform(0.15, 0.45) * PIXELS_PER_METRE)
            bh = int(rng.uniform(0.3, 1.7) * PIXELS_PER_METRE)
            bx = int(rng.uniform(x0, x1 - bw))
            shade = tuple(int(c) for c in rng.uniform(25, 55, 3))
            cv2.rectangle(canvas, (bx, y1 - bh), (bx + bw, y1), shade, -1)
            for wy in range(y1 - bh + 8, y1 - 6, 14):
                for wx in range(bx + 5, bx + bw - 5, 12):
                    if rng.random() < 0.35:
                        cv2.rectangle(canvas, (wx, wy), (wx + 4, wy + 6), (120, 210, 240), -1)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (30, 30, 30), 10)
        # Floor, couch behind the guests, band stand.
        fx0, fy0 = px(WORLD_X[0], -0.05)
        canvas[fy0:, :] = (45, 60, 80)
        cx0, cy0 = px(-2.5, -1.0)
        cx1, cy1 = px(0.2, -0.35)
        cv2.rectangle(canvas, (cx0, cy0), (cx1, cy1), (40, 50, 110), -1)
        cv2.rectangle(canvas, (cx0, cy0 - 60), (cx1, cy0 + 20), (50, 62, 130), -1)
        bx0, by0 = px(BAND_X[0], -2.2)
        bx1, by1 = px(BAND_X[1], -0.05)
        cv2.rectangle(canvas, (bx0, by0), (bx1, by1), (35, 30, 35), -1)
        for k, x in enumerate(np.linspace(BAND_X[0] + 0.3, BAND_X[1] - 0.3, 3)):
            cxp, cyp = px(float(x), -0.5)
            cv2.circle(canvas, (cxp, cyp), int(0.28 * PIXELS_PER_METRE), (40, 140, 200), 6)  # drums
            cv2.circle(canvas, (cxp, cyp - 150), int(0.18 * PIXELS_PER_METRE), (60, 200, 230), 4)
        return cv2.GaussianBlur(canvas, (0, 0), 1.2)

    def _paint_audience_backdrop(self) -> np.ndarray:
        canvas, px = self._canvas()
        h = canvas.shape[0]
        ramp = np.linspace(0, 1, h)[:, None]
        canvas[:] = (np.array([20, 15, 35]) * (1 - ramp) + np.array([35, 25, 60]) * ramp)[:, None, :].astype(np.uint8)
        for row_y in (-2.6, -2.0, -1.4, -0.8):
            _, y = px(0.0, row_y)
            cv2.rectangle(canvas, (0, y), (canvas.shape[1], y + 40), (30, 30, 90), -1)
        return cv2.GaussianBlur(canvas, (0, 0), 2.0)


def audience_seats(count: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Audience head positions: rows of people, a little jitter."""
    seats = []
    rows = (-2.75, -2.15, -1.55)
    per_row = int(np.ceil(count / len(rows)))
    for r, y in enumerate(rows):
        xs = np.linspace(-3.4, 3.4, per_row) + (0.3 if r % 2 else 0.0)
        for x in xs:
            if len(seats) < count:
                seats.append((float(x + rng.uniform(-0.1, 0.1)), float(y + rng.uniform(-0.05, 0.05))))
    return seats
