"""Security: tokens on every API route, sessions private to their token, rate and size limits, CORS,
response headers, and nothing of the media written anywhere."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi.routing import APIRoute

from server.config import ServerConfig
from server.security import RateLimiter, TokenAuth
from tests.reliability.test_cycles import offer_sdp
from tests.support.faults import RawClient
from tests.support.gateway import REPO_ROOT, free_port, gateway_in_loop
from tests.support.scripted_media import AudioPhase, ScriptedAudioTrack, ScriptedVideoTrack, VideoPhase

pytestmark = pytest.mark.timeout(180)

A, B = "token-a-" + "x" * 24, "token-b-" + "y" * 24


def bearer(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def api_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every /v1 HTTP route, with {session_id} filled in later."""
    out = []
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            out += [(method, route.path) for method in sorted(route.methods)]
    return out


def test_every_api_route_needs_a_token_and_sessions_belong_to_their_token(tiny_model_repository, report):
    async def main():
        async with gateway_in_loop(tiny_model_repository, api_tokens=(A, B), rate_limit_per_s=0) as gw:
            routes = api_routes(gw.app)
            assert len(routes) >= 6, routes
            sdp = await offer_sdp()
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                created = await http.post("/v1/sessions", json={"sdp": sdp}, headers=bearer(A))
                assert created.status_code == 201, created.text
                session_id = created.json()["session_id"]
                bodies = {"POST /v1/sessions": {"sdp": sdp}, "PATCH": {"lambda_video": 0.5}, "say": {"text": "hi"}}

                async def call(method: str, path: str, headers: dict) -> httpx.Response:
                    body = bodies.get(f"{method} {path}") or (bodies["say"] if path.endswith("/say") else
                                                              bodies["PATCH"] if method == "PATCH" else None)
                    return await http.request(method, path.replace("{session_id}", session_id), json=body,
                                              headers=headers)

                # No token, a wrong one, one of a different scheme, an empty one: 401 on every route.
                for method, path in routes:
                    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {A}"}, {"Authorization": "Bearer"},
                                    bearer(A[:-1]), bearer(A + "x")):
                        response = await call(method, path, headers)
                        assert response.status_code == 401, (method, path, headers, response.text)
                        assert response.headers["www-authenticate"] == "Bearer" and response.json()["error"]
                # Another client's token: the session does not exist for it (404), and stays untouched.
                for method, path in routes:
                    if "{session_id}" in path:
                        response = await call(method, path, bearer(B))
                        assert response.status_code == 404, (method, path, response.text)
                assert (await http.get(f"/v1/sessions/{session_id}", headers=bearer(A))).status_code == 200
                ws = gw.url.replace("http", "ws") + f"/v1/sessions/{session_id}/events"
                for url, headers in ((ws, {}), (ws + "?token=wrong", {}), (ws, bearer(B)), (ws + f"?token={B}", {})):
                    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:  # handshake refused
                        async with websockets.connect(url, additional_headers=headers):
                            pass
                    assert refused.value.response.status_code == 403
                async with websockets.connect(ws + f"?token={A}") as socket:
                    assert (await asyncio.wait_for(socket.recv(), 5)).startswith('{"type":"stats"')
                # Probes stay open without a token.
                for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                    assert (await http.get(path)).status_code == 200, path
                assert (await http.delete(f"/v1/sessions/{session_id}", headers=bearer(A))).status_code == 204
        report(f"auth: {len(routes)} API routes x 6 bad credentials -> 401; another token -> 404 on every "
               "session route; the events socket refuses both (403)")

    asyncio.run(main())


def test_token_auth_compares_every_token_in_constant_time(monkeypatch):
    import hmac

    import server.security as security

    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    auth = TokenAuth(("alpha", "a-much-longer-token-than-alpha", "gamma"))
    assert auth.owner("alpha") == 0 and auth.owner("gamma") == 2 and auth.owner("nope") == -1
    assert auth.owner(None) == -1 and TokenAuth(()).owner(None) is None
    # Every configured token was compared for every call (no early exit), always digests of one length.
    assert len(calls) == 3 * 4 and {pair for pair in calls} == {(32, 32)}


def test_rate_limits_answer_429_with_retry_after(tiny_model_repository, report):
    async def main():
        async with gateway_in_loop(tiny_model_repository, rate_limit_per_s=5, rate_limit_burst=10,
                                   session_rate_per_min=6, session_rate_burst=2, max_sessions=8) as gw:
            sdp = await offer_sdp()
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                statuses = [(await http.get("/v1/ice-servers")).status_code for _ in range(15)]
                assert statuses[:10] == [200] * 10 and 429 in statuses[10:], statuses
                limited = await http.get("/v1/ice-servers")
                assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
                assert limited.json()["error"] == "too many requests"
                for _ in range(30):  # probes are never limited
                    assert (await http.get("/healthz")).status_code == 200
                await asyncio.sleep(1.2)  # the bucket refills at 5/s
                assert (await http.get("/v1/ice-servers")).status_code == 200
                # Session creations: 2 at once, then one every 10 s.
                gw.gateway.request_limiter.rate = 0  # only the session limiter now
                created = [await http.post("/v1/sessions", json={"sdp": sdp}) for _ in range(3)]
                assert [r.status_code for r in created] == [201, 201, 429], [r.text for r in created]
                assert int(created[2].headers["retry-after"]) >= 5
                for response in created[:2]:
                    await http.delete(f"/v1/sessions/{response.json()['session_id']}")
            metrics = gw.gateway
            report(f"rate limits: 11th request in a burst of 10 at 5/s -> 429 (Retry-After "
                   f"{limited.headers['retry-after']} s); 3rd session in a burst of 2 -> 429 (Retry-After "
                   f"{created[2].headers['retry-after']} s); refused so far {metrics.request_limiter.refused} + "
                   f"{metrics.session_limiter.refused}")

    asyncio.run(main())


def test_rate_limiter_memory_is_bounded():
    now = [0.0]
    limiter = RateLimiter(1.0, 2, max_keys=100, clock=lambda: now[0])
    for i in range(10_000):
        limiter.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100


def test_cors_allow_list_and_response_headers(tiny_model_repository):
    allowed, other = "https://app.example", "https://evil.example"

    async def main():
        async with gateway_in_loop(tiny_model_repository, cors_origins=(allowed,)) as gw:
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                ok = await http.get("/v1/ice-servers", headers={"Origin": allowed})
                assert ok.headers["access-control-allow-origin"] == allowed
                assert "access-control-allow-credentials" not in ok.headers
                refused = await http.get("/v1/ice-servers", headers={"Origin": other})
                assert "access-control-allow-origin" not in refused.headers
                preflight = {"Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "authorization,content-type"}
                good = await http.options("/v1/sessions", headers={"Origin": allowed, **preflight})
                assert good.status_code == 200 and good.headers["access-control-allow-origin"] == allowed
                assert "authorization" in good.headers["access-control-allow-headers"].lower()
                bad = await http.options("/v1/sessions", headers={"Origin": other, **preflight})
                assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
                # A refused request still carries the CORS headers, so the page can read the error.
                too_big = await http.post("/v1/sessions", content=b"x" * 200_000,
                                          headers={"Origin": allowed, "content-type": "application/json"})
                assert too_big.status_code == 413 and too_big.headers["access-control-allow-origin"] == allowed
                # Response headers of every answer; API answers are never cached.
                for response in (ok, refused, too_big, await http.get("/healthz")):
                    assert response.headers["x-content-type-options"] == "nosniff"
                    assert response.headers["x-frame-options"] == "DENY"
                    assert response.headers["referrer-policy"] == "no-referrer"
                assert ok.headers["cache-control"] == "no-store"
        async with gateway_in_loop(tiny_model_repository) as gw:  # no origins configured: no CORS at all
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                response = await http.get("/v1/ice-servers", headers={"Origin": allowed})
                assert "access-control-allow-origin" not in response.headers

    asyncio.run(main())
    with pytest.raises(ValueError, match="wildcard"):
        ServerConfig(cors_origins=("*",))


def _writable_files(pid: int) -> list[str]:
    """Regular files the process holds open for writing."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            flags = int(open(f"/proc/{pid}/fdinfo/{fd}").read().split("flags:")[1].split()[0], 8)
            mode = os.stat(f"/proc/{pid}/fd/{fd}").st_mode
        except (OSError, IndexError, ValueError):
            continue
        if stat.S_ISREG(mode) and flags & (os.O_WRONLY | os.O_RDWR):
            out.append(target)
    return out


def test_no_media_or_audio_is_persisted(tiny_model_repository, tmp_path, report):
    """A gateway process whose working directory, HOME and TMPDIR are empty folders serves a session with
    partner video, host audio and text to speech: it holds no file open for writing, and the folders stay empty."""
    work, home, tmp = (tmp_path / name for name in ("work", "home", "tmp"))
    for folder in (work, home, tmp):
        folder.mkdir()
    port = free_port()
    token = "persist-" + "z" * 24
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": str(home), "TMPDIR": str(tmp),
           "PYTHONDONTWRITEBYTECODE": "1", "F2F_API_TOKENS": token}
    log = subprocess.PIPE
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port), "--ice-loopback",
                                "--model-repository", str(tiny_model_repository), "--log-level", "info"],
                               cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.2)

        async def session() -> list[str]:
            client = RawClient(f"http://127.0.0.1:{port}", token=token,
                               video=ScriptedVideoTrack([VideoPhase(30, (320, 240), 25)]),
                               audio=ScriptedAudioTrack([AudioPhase(30)]))
            await client.start()
            try:
                async with httpx.AsyncClient(base_url=client.url, headers=client.headers) as http:
                    said = await http.post(f"/v1/sessions/{client.session_id}/say", json={"text": "Nothing is kept."})
                    assert said.status_code == 202, said.text
                seen: set[str] = set()
                for _ in range(20):
                    await asyncio.sleep(0.2)
                    seen.update(_writable_files(process.pid))
                assert client.video_frames > 25 and (await client.stats())["say_samples_injected"] > 0
                return sorted(seen)
            finally:
                await client.close()

        written = asyncio.run(session())
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    # matplotlib (imported by mediapipe) caches the machine's font list in HOME: not media, allowed.
    left = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
            if p.is_file() and not p.match("home/.cache/matplotlib/fontlist-*.json")]
    report(f"persistence: files open for writing during a session: {written or 'none'}; files left in the "
           f"gateway's cwd/HOME/TMPDIR: {left or 'none'}")
    assert written == [], written
    assert left == [], left
    assert token.encode() not in output, "the token appeared in the gateway's log"
