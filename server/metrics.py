"""Prometheus metrics of one gateway (its own registry, so several gateways can live in one process).

Stages of the per-frame path, as `f2f_stage_seconds{stage=...}` histograms (see docs/api.md):
  receive        partner frame delivered by aiortc -> picked up by the face worker (queue wait)
  decode         partner frame -> BGR pixels (the VP8/H.264 decode itself runs inside aiortc);
                 host audio frame -> 16 kHz mono samples
  face           face mesh + face crop of one partner frame (thread pool)
  guest_encoder  engine.encode_partner of one face (through the micro-batcher)
  late           a step's due time -> it starts (waiting for late input audio, a busy machine)
  audio_features host audio timeline finalised + streaming log-mel for one tick
  step           engine.step: motion generator + renderer for one tick (through the micro-batcher)
  motion         the motion generator's part of that step (the whole batch; embedded backend only)
  render         the renderer's part of that step (the whole batch; embedded backend only)
  send           output frame queued -> taken by aiortc's sender
  encode         taken by aiortc's sender -> it asks for the next frame (encode + packetise + send)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STAGES = ("receive", "decode", "face", "guest_encoder", "late", "audio_features", "step", "motion", "render",
          "send", "encode")
_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.040, 0.060, 0.080,
            0.120, 0.200, 0.500, 1.0, 2.0)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_active = Gauge("f2f_sessions_active", "Sessions currently open", registry=r)
        self.sessions_started = Counter("f2f_sessions_started_total", "Sessions accepted", registry=r)
        self.sessions_ended = Counter("f2f_sessions_ended_total", "Sessions ended, by reason", ["reason"],
                                      registry=r)
        self.sessions_rejected = Counter("f2f_sessions_rejected_total", "Offers refused, by reason", ["reason"],
                                         registry=r)
        self.session_fps = Gauge("f2f_session_fps", "Output frames per second of each open session",
                                 ["session"], registry=r)
        self.frames_sent = Counter("f2f_frames_sent_total", "Host frames handed to the video sender", registry=r)
        self.frames_skipped = Counter("f2f_frames_skipped_total",
                                      "Host frames not made or not sent, by reason (late, engine, backlog)",
                                      ["reason"], registry=r)
        self.partner_frames = Counter("f2f_partner_frames_received_total", "Partner video frames received",
                                      registry=r)
        self.partner_frames_dropped = Counter("f2f_partner_frames_dropped_total",
                                              "Partner frames replaced by a newer one before the face worker "
                                              "took them", registry=r)
        self.host_audio_samples = Counter("f2f_host_audio_samples_total",
                                          "Host audio samples received (16 kHz after resampling)", registry=r)
        self.audio_underrun_samples = Counter("f2f_audio_underrun_samples_total",
                                              "Host audio samples that arrived too late and were replaced by "
                                              "silence", registry=r)
        self.audio_dropped_samples = Counter("f2f_audio_dropped_samples_total",
                                             "Host audio samples dropped to keep the input within bounds of the "
                                             "clock", registry=r)
        self.motion_messages = Counter("f2f_motion_messages_total", "Motion messages sent on data channels",
                                       registry=r)
        self.motion_messages_dropped = Counter("f2f_motion_messages_dropped_total",
                                               "Motion messages dropped (channel closed or congested)", registry=r)
        self.engine_errors = Counter("f2f_engine_errors_total", "Engine calls that failed, by kind",
                                     ["kind"], registry=r)
        self.engine_ready = Gauge("f2f_engine_ready", "1 when the engine reports ready", registry=r)
        self.stage_seconds = Histogram("f2f_stage_seconds", "Time spent per stage of the per-frame path",
                                       ["stage"], buckets=_BUCKETS, registry=r)
        self._stages = {stage: self.stage_seconds.labels(stage=stage) for stage in STAGES}
        for reason in ("late", "engine", "backlog"):
            self.frames_skipped.labels(reason=reason)

    def observe(self, stage: str, seconds: float) -> None:
        self._stages[stage].observe(seconds)

    def forget_session(self, session_id: str) -> None:
        try:
            self.session_fps.remove(session_id)
        except KeyError:
            pass

    def render(self) -> bytes:
        return generate_latest(self.registry)
