"""Bad signalling: every malformed request ends with a clear JSON error, the gateway stays up, nothing
is left behind. One gateway (the real embedded engine, tiny avatar) serves the whole module."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import websockets

from tests.reliability.test_cycles import offer_sdp
from tests.support.gateway import gateway_in_loop

pytestmark = pytest.mark.timeout(180)


async def expect_error(response: httpx.Response, status: int, contains: str = "") -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert contains.lower() in response.text.lower(), (contains, response.text[:500])
    return body


def replace_codecs(sdp: str, kind: str, name: str) -> str:
    """Every rtpmap of the `kind` section renamed to `name` (a codec the gateway does not have)."""
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.M)
    out = [head]
    for section in sections:
        if section.startswith(f"m={kind}"):
            section = re.sub(r"(a=rtpmap:\d+ )[^/\r\n]+/", rf"\g<1>{name}/", section)
        out.append(section)
    return "".join(out)


def test_bad_signalling_is_answered_with_clear_errors(tiny_model_repository, report):
    async def main():
        async with gateway_in_loop(tiny_model_repository, rate_limit_per_s=0, session_rate_per_min=0) as gw:
            good = await offer_sdp()
            cases = 0
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                async def post(body=None, **kwargs):
                    nonlocal cases
                    cases += 1
                    if body is not None:
                        kwargs["json"] = body
                    return await http.post("/v1/sessions", **kwargs)

                # Malformed SDP.
                truncated = good[: len(good) // 3]
                for sdp, says in [("", "v=0"), ("this is not sdp", "v=0"), (truncated, ""),
                                  ("v=0\r\n" + "\x00\xff garbage \u202e" * 50, ""),
                                  ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video notaport RTP/AVP x\r\n", ""),
                                  (good.replace("a=fingerprint", "a=x-fingerprint"), "fingerprint"),
                                  (good.replace("a=ice-ufrag", "a=x-ufrag"), "ice"),
                                  ("v=0\r\n" + "a=" + "x" * 60_000 + "\r\n", "")]:
                    await expect_error(await post({"sdp": sdp}), 400, says)
                # Offers with no media, or a media kind the gateway does not know.
                no_media = "\r\n".join(l for l in good.splitlines() if not l.startswith(("m=", "a=", "c=")))
                await expect_error(await post({"sdp": no_media}), 400, "no media")
                await expect_error(await post({"sdp": re.sub(r"^m=video", "m=text", good, flags=re.M)}), 400)
                # Unknown codecs: the error says which section and what the gateway speaks.
                for kind, name in (("video", "AV1X"), ("audio", "G729")):
                    await expect_error(await post({"sdp": replace_codecs(good, kind, name)}), 400,
                                       f"no codec in common in the {kind} section")
                # Oversized: an SDP over MAX_SDP_BYTES (400), a body over the limit (413), with and
                # without a Content-Length (a chunked upload is counted as it arrives).
                big_sdp = good + "a=x-padding:" + "y" * (gw.gateway.config.max_sdp_bytes) + "\r\n"
                await expect_error(await post({"sdp": big_sdp[: gw.gateway.config.max_sdp_bytes + 8000]}), 400, "larger")
                await expect_error(await post({"sdp": "v=0" + " " * 200_000}), 413, "larger")

                async def chunks():
                    for _ in range(100):
                        yield b" " * 10_000

                await expect_error(await post(content=chunks(), headers={"content-type": "application/json"}), 413)
                # Wrong content types, broken or missing JSON.
                for headers, content in [({"content-type": "text/plain"}, '{"sdp": "v=0"}'),
                                         ({"content-type": "application/x-www-form-urlencoded"}, "sdp=v%3D0"),
                                         ({"content-type": "multipart/form-data; boundary=x"}, "--x--"),
                                         ({}, '{"sdp": "v=0"}')]:
                    await expect_error(await post(content=content, headers=headers), 415, "json")
                json_headers = {"content-type": "application/json"}
                for content in ("{bad json", "[1, 2]", '"offer"', "null", "", "{}", '{"sdp": 5}',
                                '{"sdp": "v=0", "lambda_video": NaN}', '{"sdp": "v=0", "lambda_video": Infinity}',
                                '{"sdp": "v=0", "lambda_video": 1e999}'):
                    await expect_error(await post(content=content.encode(), headers=json_headers), 422)
                await expect_error(await post(content=b"\xff\xfe{", headers=json_headers), 400, "parsing the body")
                # Invalid λ_video, sizes, codecs and types.
                for extra in ({"lambda_video": -0.1}, {"lambda_video": 10.01}, {"lambda_video": "0.5"},
                              {"lambda_video": True}, {"lambda_video": [1]}, {"output_size": 63},
                              {"output_size": 1026}, {"output_size": 97}, {"output_size": 256.5},
                              {"output_size": "256"}, {"output_size": -256}, {"output_size": 2**64},
                              {"video_codec": "AV1"}, {"video_codec": "vp8"}, {"type": "answer"}, {"type": None}):
                    await expect_error(await post({"sdp": good, **extra}), 422)

                # Unknown and closed session ids, on every session route.
                created = await post({"sdp": good})
                assert created.status_code == 201, created.text
                closed_id = created.json()["session_id"]
                assert (await http.delete(f"/v1/sessions/{closed_id}")).status_code == 204
                for session_id in ("nope", closed_id, "x" * 4000, "%00%ff", "..%2F..%2Fetc%2Fpasswd", "\u00e9t\u00e9"):
                    path = f"/v1/sessions/{session_id}"
                    await expect_error(await http.get(path), 404)
                    await expect_error(await http.patch(path, json={"lambda_video": 0.5}), 404)
                    await expect_error(await http.delete(path), 404)
                    await expect_error(await http.post(path + "/say", json={"text": "hello"}), 404)
                    cases += 4
                    with pytest.raises(websockets.exceptions.InvalidStatus):
                        async with websockets.connect(gw.url.replace("http", "ws") + path + "/events"):
                            pass
                # PATCH and say with bad bodies (on an open session).
                created = await post({"sdp": good})
                path = f"/v1/sessions/{created.json()['session_id']}"
                for body in ({}, {"lambda_video": -1}, {"lambda_video": "1"}, {"lambda_video": None}):
                    await expect_error(await http.patch(path, json=body), 422)
                for body in ({}, {"text": ""}, {"text": 5}):
                    await expect_error(await http.post(path + "/say", json=body), 422)
                await expect_error(await http.post(path + "/say", json={"text": "la " * 2000}), 413)
                await expect_error(await http.put(path, json={}), 405)
                await expect_error(await http.get("/v1/no-such-route"), 404)
                assert (await http.delete(path)).status_code == 204
                cases += 12
                # The gateway is still fine: it answers, and a good offer still works.
                assert (await http.get("/readyz")).status_code == 200
                created = await post({"sdp": good})
                assert created.status_code == 201
                assert (await http.delete(f"/v1/sessions/{created.json()['session_id']}")).status_code == 204
                await asyncio.sleep(0.2)
            assert not gw.gateway.sessions and gw.gateway._pending == 0
            report(f"bad signalling: {cases} malformed requests, each a JSON 400/404/405/413/415/422; "
                   "nothing left open, good offers still accepted")

    asyncio.run(main())
