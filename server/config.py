"""The gateway's configuration: one typed dataclass, filled from F2F_* environment variables and CLI flags.

Precedence: defaults < environment < command-line flags (`server.cli` applies the flags with
`dataclasses.replace`). Every field is documented where it is declared; `docs/api.md` lists the
environment variable of each.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

VIDEO_CODECS = ("VP8", "H264")
BACKENDS = ("embedded", "triton")
DEVICES = ("cpu", "cuda", "tensorrt")
ENV_PREFIX = "F2F_"


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as WebRTC's RTCIceServer (a TURN server needs username + credential)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("an ICE server needs at least one URL")
        for url in self.urls:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"ICE server URL must start with stun:, stuns:, turn: or turns:, got {url!r}")
            if url.startswith("turn") and (self.username is None or self.credential is None):
                raise ValueError(f"TURN server {url!r} needs a username and a credential")

    def to_json(self) -> dict:
        """The browser's RTCIceServer dictionary."""
        out: dict = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out

    @classmethod
    def from_json(cls, data: Mapping | str) -> "IceServer":
        if isinstance(data, str):
            return cls(urls=(data,))
        urls = data.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"ICE server 'urls' must be a string or a list of strings, got {urls!r}")
        return cls(urls=tuple(urls), username=data.get("username"), credential=data.get("credential"))


def parse_ice_servers(text: str) -> tuple[IceServer, ...]:
    """A JSON list of RTCIceServer dictionaries, or comma-separated stun: URLs."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError("F2F_ICE_SERVERS must be a JSON list")
        return tuple(IceServer.from_json(item) for item in data)
    return tuple(IceServer(urls=(url.strip(),)) for url in text.split(",") if url.strip())


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


def default_web_root() -> Path:
    """`clients/web/` of this checkout (the demo page)."""
    return Path(__file__).resolve().parent.parent / "clients" / "web"


@dataclass(frozen=True)
class ServerConfig:
    # Network
    host: str = "127.0.0.1"
    port: int = 8080
    # Inference backend (engines.open_engine)
    backend: str = "embedded"
    model_repository: Path | None = None  # None: the engine package's default avatar
    triton_url: str | None = None  # host:port of Triton's gRPC endpoint (None: the engine's default)
    device: str = "cpu"  # embedded backend: cpu | cuda | tensorrt (onnxruntime execution providers)
    # embedded backend: onnxruntime threads per call. 1 by default: on a small CPU machine the face mesh,
    # the video codecs and other sessions share the cores, and a spinning multi-thread pool starves them
    # (measured on 2 cores under load: 1 thread -> 2-4 ms steps, no skips; 0 = all cores -> 10-22 ms, skips).
    intra_op_threads: int = 1
    on_backend_down: str = "failover"  # triton backend down: failover (to embedded) | end_session
    batch_window_ms: float = 3.0  # MicroBatcher: how long a call waits for others to join its batch
    max_batch: int = 64
    # Admission and security
    max_sessions: int = 4  # the cap; one more answers 503 with Retry-After
    retry_after_s: int = 5
    api_tokens: tuple[str, ...] = ()  # bearer tokens; empty: no auth. A session belongs to its token.
    cors_origins: tuple[str, ...] = ()  # allowed browser origins; empty: no CORS headers
    max_sdp_bytes: int = 64 * 1024  # a request body may be this + 16 KiB of JSON around the SDP
    max_say_chars: int = 1000
    # Rate limits (server.security.RateLimiter; 0 = off). API requests per client address: generous
    # for a page polling stats, tight enough that a token cannot be guessed by brute force.
    rate_limit_per_s: float = 20.0
    rate_limit_burst: int = 40
    # Session creations per client (its token, or its address when auth is off): each one builds a
    # peer connection and gathers ICE candidates, the most expensive thing a request can ask for.
    session_rate_per_min: float = 30.0
    session_rate_burst: int = 10
    # WebRTC
    ice_servers: tuple[IceServer, ...] = ()  # STUN/TURN for the gateway's peer connections
    ice_loopback: bool = False  # also offer 127.0.0.1 host candidates (aioice skips loopback)
    video_codec: str = "VP8"  # default codec preference of the host video ("VP8" or "H264")
    # Hand received video frames over at their marker packet and audio packets on arrival, instead of
    # aiortc's one-frame (video) / four-packet (audio) hold (f2f/rtc_early_delivery.py).
    early_delivery: bool = True
    connect_timeout_s: float = 15.0  # answer sent -> connected, else the session is freed
    media_timeout_s: float = 3.0  # no packet from the client for this long -> the session is freed
    # Avatar
    # Video guidance of new sessions that name none: the shipped default avatar's, chosen on its train
    # split (pipeline/train/config.py, avatars/default/eval.json). Set it per avatar served.
    default_lambda_video: float = 1.5
    # Fixed wait past the look-ahead for the audio. 0: the avatar loop waits for the audio's arrival
    # instead (up to 50 ms), which costs nothing when it is on time (f2f bench latency).
    audio_margin_ms: float = 0.0
    step_timeout_s: float = 0.5  # an engine step slower than this is abandoned, its frames skipped
    face_max_fps: float = 25.0  # partner frames run through the face mesh at most this often
    partner_stale_s: float = 0.25  # a guest feature older than this counts as "no face"
    # Text to speech (POST /v1/sessions/{id}/say)
    espeak_voice: str = "en-us"
    espeak_words_per_minute: int = 160
    # Events and pages
    stats_interval_s: float = 1.0
    web_root: Path | None = field(default_factory=default_web_root)  # None: no demo page
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.on_backend_down not in ("failover", "end_session"):
            raise ValueError(f"on_backend_down must be failover or end_session, got {self.on_backend_down!r}")
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {VIDEO_CODECS}, got {self.video_codec!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        for name in ("connect_timeout_s", "media_timeout_s", "step_timeout_s", "face_max_fps",
                     "partner_stale_s", "stats_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (0 <= self.audio_margin_ms <= 500):
            raise ValueError(f"audio_margin_ms must be 0..500, got {self.audio_margin_ms}")
        if not (0 <= self.default_lambda_video <= 10):
            raise ValueError(f"default_lambda_video must be 0..10, got {self.default_lambda_video}")
        if any(not t for t in self.api_tokens):
            raise ValueError("api tokens must be non-empty")
        if "*" in self.cors_origins:
            raise ValueError("a CORS wildcard is not allowed: list the allowed origins")
        for name in ("rate_limit_per_s", "session_rate_per_min"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 (0 = no limit), got {value}")
        if self.rate_limit_burst < 1 or self.session_rate_burst < 1:
            raise ValueError("rate limit bursts must be >= 1")
        if self.max_sdp_bytes < 1024 or self.max_say_chars < 1:
            raise ValueError("max_sdp_bytes must be >= 1024 and max_say_chars >= 1")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServerConfig":
        """Defaults, then F2F_<FIELD> variables (e.g. F2F_MAX_SESSIONS=8), then `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key not in environ:
                continue
            values[f.name] = _parse_field(f.name, environ[key])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse_field(name: str, text: str):
    """Environment text -> the field's type."""
    if name in ("port", "max_batch", "intra_op_threads", "max_sessions", "retry_after_s", "max_sdp_bytes", "max_say_chars",
                "espeak_words_per_minute", "rate_limit_burst", "session_rate_burst"):
        return int(text)
    if name in ("batch_window_ms", "connect_timeout_s", "media_timeout_s", "default_lambda_video",
                "audio_margin_ms", "step_timeout_s", "face_max_fps", "partner_stale_s", "stats_interval_s",
                "rate_limit_per_s", "session_rate_per_min"):
        return float(text)
    if name in ("ice_loopback", "early_delivery"):
        return _bool(text)
    if name in ("api_tokens", "cors_origins"):
        return _split(text)
    if name == "ice_servers":
        return parse_ice_servers(text)
    if name in ("model_repository", "web_root"):
        return Path(text) if text else None
    if name == "triton_url":
        return text or None
    return text
