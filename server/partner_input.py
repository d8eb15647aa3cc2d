"""Partner video in: newest frame -> face mesh + face crop (thread pool) -> guest encoder -> guest context.

Two tasks per session:
- the reader takes every frame aiortc delivers and keeps only the newest (an unprocessed older one
  is dropped and counted: stale partner frames are never queued);
- the face worker takes the newest frame, at most `face_max_fps` times a second, and runs the shared
  featurizers off the event loop: BGR conversion (downscaled to at most 640 px wide), mediapipe face
  mesh (`FaceGeometryFeaturizer(static_images=False)`, one per session, tracking across frames),
  `crop_face`; then `engine.encode_partner` (through the micro-batcher) gives the guest feature.
  No face -> an invisible observation (the paper's blackout frame; the host listens).

`GuestContext` turns those observations into the window the motion generator sees: one slot per
25 fps tick holding the newest observation (marked invisible when older than `stale_s`), the last
G = 64 slots, so any partner frame rate becomes the model's 25 fps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from typing import Callable

import cv2
import numpy as np

from engines.contract import AvatarEngine, PartnerFace
from f2f.avatar_spec import AvatarSpec
from f2f.features.face_crop import crop_face
from server.frames import GuestObservation, PartnerFrame
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MAX_FACE_INPUT_WIDTH = 640  # the face mesh sees 192-256 px anyway; converting less costs less


class GuestContext:
    """The last G ticks of guest features + visibility, for one partner (slot 0 of P)."""

    def __init__(self, spec: AvatarSpec, stale_s: float = 0.25):
        self.spec = spec
        self.stale_s = stale_s
        shape = (spec.partners, spec.guest_context_frames)
        self._features = np.zeros(shape + (spec.guest_feature_dim,), dtype=np.float32)
        self._visible = np.zeros(shape, dtype=np.float32)
        self.latest: GuestObservation | None = None
        self.observations = 0
        self.faces_seen = 0

    def observe(self, obs: GuestObservation) -> None:
        self.latest = obs
        self.observations += 1
        self.faces_seen += int(obs.visible)

    def tick(self, now: float) -> tuple[np.ndarray, np.ndarray, float | None, bool]:
        """Advance one 25 fps slot -> (features (P, G, D), visible (P, G), partner pts, visible now)."""
        self._features[:, :-1] = self._features[:, 1:]
        self._visible[:, :-1] = self._visible[:, 1:]
        obs = self.latest
        fresh = obs is not None and obs.visible and now - obs.observed_at <= self.stale_s
        if fresh:
            self._features[0, -1] = obs.feature
            self._visible[0, -1] = 1.0
        else:
            self._features[0, -1] = 0.0
            self._visible[0, -1] = 0.0
        return (self._features.copy(), self._visible.copy(), None if obs is None else obs.partner_pts, bool(fresh))


class _Featurizer:
    """One session's face mesh behind a lock, so close() never races a running process()."""

    def __init__(self):
        from f2f.features.face_geometry import FaceGeometryFeaturizer

        self._mesh = FaceGeometryFeaturizer(max_faces=1, static_images=False)
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, rgb: np.ndarray):
        with self._lock:
            if self._closed:
                return []
            return self._mesh.measure_rgb(rgb)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._mesh.close()


def analyse_frame(frame, featurizer: Callable, crop_size: int) -> tuple[PartnerFace | None, float, float]:
    """(thread pool) av.VideoFrame -> (the face ready for the guest encoder or None, decode s, face s)."""
    started = time.perf_counter()
    width, height = frame.width, frame.height
    if width > MAX_FACE_INPUT_WIDTH:
        scale = MAX_FACE_INPUT_WIDTH / width
        rgb = frame.reformat(width=MAX_FACE_INPUT_WIDTH, height=max(2, int(round(height * scale / 2)) * 2),
                             format="rgb24").to_ndarray()
    elif frame.format.name == "yuv420p" and width % 2 == 0 and height % 2 == 0:  # what the decoders give:
        # OpenCV converts without building a swscale context per frame (and releases the GIL)
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    converted = time.perf_counter()
    faces = featurizer(rgb)  # RGB, as mediapipe takes it: no channel flip and copy per frame
    face = None
    if faces:
        best = max(faces, key=lambda f: f.box[2] * f.box[3])
        if best.box[2] > 1 and best.box[3] > 1:
            crop = crop_face(rgb, best.box, crop_size)
            face = PartnerFace(crop=crop, geometry=best.motion.astype(np.float32))
    done = time.perf_counter()
    return face, converted - started, done - converted


class PartnerInput:
    """Reader + face worker of one session's partner video track."""

    def __init__(self, track, engine: AvatarEngine, guests: GuestContext, metrics: GatewayMetrics, *,
                 executor: Executor | None = None, face_max_fps: float = 25.0,
                 featurizer_factory: Callable[[], Callable] = _Featurizer):
        self.track = track
        self.engine = engine
        self.guests = guests
        self.metrics = metrics
        self.executor = executor
        self.min_interval = 1.0 / face_max_fps
        self.featurizer_factory = featurizer_factory
        self._latest: PartnerFrame | None = None
        self._new = asyncio.Event()
        self.frames_received = 0
        self.frames_dropped = 0
        self.frames_processed = 0
        self.ended = False
        self.featurizer_closed = False

    async def run_reader(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                now = time.monotonic()
                self.frames_received += 1
                self.metrics.partner_frames.inc()
                if self._latest is not None:
                    self.frames_dropped += 1
                    self.metrics.partner_frames_dropped.inc()
                pts = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                self._latest = PartnerFrame(frame, pts, now)
                self._new.set()
        finally:
            self.ended = True

    async def run_face_worker(self) -> None:
        loop = asyncio.get_running_loop()
        making = loop.run_in_executor(self.executor, self.featurizer_factory)
        try:
            featurizer = await asyncio.shield(making)
        except asyncio.CancelledError:  # closed while the mesh was being built: close it once it exists
            making.add_done_callback(_close_when_built)
            self.featurizer_closed = True
            raise
        last_start = 0.0
        try:
            while True:
                await self._new.wait()
                wait = last_start + self.min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # newer frames may replace this one meanwhile
                self._new.clear()
                item, self._latest = self._latest, None
                if item is None:
                    continue
                last_start = time.monotonic()
                self.metrics.observe("receive", last_start - item.received_at)
                face, decode_s, face_s = await loop.run_in_executor(
                    self.executor, analyse_frame, item.frame, featurizer, self.guests.spec.crop_size)
                self.metrics.observe("decode", decode_s)
                self.metrics.observe("face", face_s)
                feature = np.zeros(self.guests.spec.guest_feature_dim, dtype=np.float32)
                if face is not None:
                    started = time.perf_counter()
                    try:
                        feature = (await self.engine.encode_partner([face]))[0].astype(np.float32)
                    except Exception as error:  # a failed encode is a frame without a face, not a crash
                        self.metrics.engine_errors.labels(kind=type(error).__name__).inc()
                        log.warning("guest encoder failed: %s", error)
                        face = None
                    self.metrics.observe("guest_encoder", time.perf_counter() - started)
                self.frames_processed += 1
                self.guests.observe(GuestObservation(
                    feature=feature, visible=face is not None, partner_pts=item.pts, observed_at=time.monotonic(),
                    geometry=None if face is None else face.geometry))
        finally:
            # Close the mesh on the pool, after any process() still running there (same lock).
            close = getattr(featurizer, "close", None)
            if close is not None:
                await asyncio.shield(loop.run_in_executor(self.executor, close))
            self.featurizer_closed = True


def _close_when_built(future) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    close = getattr(future.result(), "close", None)
    if close is not None:
        close()
