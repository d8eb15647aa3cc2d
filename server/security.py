"""Who may call the gateway, how much, and from where (docs/security.md).

- `TokenAuth`: bearer tokens. The supplied token is compared with *every* configured token through
  `hmac.compare_digest` over SHA-256 digests (fixed length, so neither the value nor the length of
  a configured token leaks through timing). The index of the matching token is the caller's
  identity: a session belongs to the token that created it.
- `RateLimiter`: token buckets per client key (an IP address or a token's index), bounded in memory.
- `RequestGuard`: pure ASGI middleware in front of the app, for `/v1/...` HTTP requests: the
  per-IP request rate (429 + Retry-After), JSON-only request bodies (415), and the body size limit
  (413), also for bodies sent without a Content-Length (chunked), which it reads up to the limit
  before the app sees them. It adds `nosniff` / no-referrer / no-frame headers to every response,
  and `Cache-Control: no-store` to API responses (they carry SDP and session ids).
- `install_cors`: the CORS allow-list (no wildcard; credentials are never allowed, the API uses
  bearer tokens, not cookies).
Authentication itself runs in the routes (`server.app.owner_of`), after the guard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

API_PREFIX = "/v1/"
UNAUTHORIZED = -1  # TokenAuth.owner() of a missing or wrong token

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
NO_STORE = (b"cache-control", b"no-store")


class TokenAuth:
    """Bearer tokens; `owner(token)` -> the matching token's index, None when auth is off, -1 when refused."""

    def __init__(self, tokens: tuple[str, ...]):
        self._digests = tuple(_digest(token) for token in tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def owner(self, token: str | None) -> int | None:
        if not self._digests:
            return None
        supplied = _digest(token or "")
        match = UNAUTHORIZED
        for index, expected in enumerate(self._digests):  # no early exit: every token is compared
            if hmac.compare_digest(supplied, expected):
                match = index
        return match


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).digest()


def bearer_token(header: str | None) -> str | None:
    """`Authorization: Bearer <token>` -> token (None for a missing header or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: `rate_per_s` refill, at most `burst` tokens, one bucket per key.

    At most `max_keys` buckets are kept (least recently used ones are forgotten: a forgotten key
    starts again with a full bucket, so the memory of the limiter is bounded even under a flood of
    addresses). A rate of 0 disables the limiter.
    """

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if rate_per_s < 0 or burst < 0 or (rate_per_s > 0 and burst < 1):
            raise ValueError(f"rate must be >= 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until a token is there."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def client_address(scope) -> str:
    """The peer address of an ASGI connection. Proxy headers are not trusted (see docs/security.md)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestGuard:
    """ASGI middleware: rate, content type and size limits of API requests, security headers."""

    def __init__(self, app, *, max_body_bytes: int, requests: RateLimiter):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.requests = requests

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith(API_PREFIX)
        send = _with_headers(send, api)
        if api and scope["method"] != "OPTIONS":  # CORS preflights are answered outside, unlimited
            wait = self.requests.acquire(client_address(scope))
            if wait > 0:
                await _error(send, 429, "too many requests", {"retry-after": retry_after_header(wait)})
                return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                await _error(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                return
        elif scope["method"] in ("POST", "PUT", "PATCH") or b"transfer-encoding" in headers:
            body, too_big = await _read_body(receive, self.max_body_bytes)
            if too_big:
                await _error(send, 413, f"request body larger than {self.max_body_bytes} bytes")
                return
            length = str(len(body)).encode()
            receive = _replay(body)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        has_body = length is not None and length != b"0"
        if api and scope["method"] in ("POST", "PUT", "PATCH") and has_body and not _is_json(content_type):
            await _error(send, 415, "request bodies must be JSON (Content-Type: application/json)")
            return
        await self.app(scope, receive, send)


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    """Read a streamed body, at most `limit` bytes (-> body, whether it was larger)."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), False


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _with_headers(send, api: bool):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            present = {name.lower() for name, _ in headers}
            extra = SECURITY_HEADERS + ((NO_STORE,) if api else ())
            headers += [(name, value) for name, value in extra if name not in present]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _error(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def disable_vendor_telemetry() -> None:
    """onnxruntime's wheels (1.2x+) on Linux start a telemetry client when they load: a device id and an
    event database under ~/.cache/Microsoft/DeveloperTools, a session file in $TMPDIR, and uploads when
    a network is there. A gateway of this service sends and stores nothing it was not asked to: opt out
    before onnxruntime is first imported (an explicit ORT_DISABLE_TELEMETRY=0 in the environment wins)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def install_cors(app, origins: tuple[str, ...]) -> None:
    """Let exactly these browser origins call the API cross-origin (none: no CORS headers at all)."""
    if not origins:
        return
    if "*" in origins:
        raise ValueError("a CORS wildcard is not allowed: list the origins")
    from fastapi.middleware.cors import CORSMiddleware

    app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_credentials=False,
                       allow_methods=["GET", "POST", "PATCH", "DELETE"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"],
                       max_age=600)


__all__ = ["RateLimiter", "RequestGuard", "TokenAuth", "UNAUTHORIZED", "bearer_token", "client_address",
           "disable_vendor_telemetry", "install_cors", "retry_after_header"]
