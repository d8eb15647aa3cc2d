"""The demo page in real headless Chromium against the real gateway.

Chromium's fake camera plays a guest cut from a synthetic episode (the partner) and its fake
microphone an espeak-ng sentence (the host's voice). The page negotiates a session with the gateway,
which runs the tiny exported avatar through the embedded engine. We check what a user would see and
what the server saw:
- a wrong access token is refused and shown in the page's error area;
- the page presents >= 50 generated host frames (requestVideoFrameCallback, counted in f2fDebug);
- motion messages arrive on the data channel, and a λ_video slider change reaches them;
- the server counted the browser's partner frames and host-audio samples;
- Stop ends the session on the server.
A screenshot goes to test-artifacts/browser.png (gitignored).
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(180)

MIN_FRAMES = 50


def _debug(page) -> dict:
    return page.evaluate("JSON.parse(JSON.stringify(window.f2fDebug))")


def test_demo_page_streams_the_avatar(browser, gateway, artifacts_dir, report):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        page.goto(gateway.url, wait_until="load")
        assert page.title().startswith("f2f")
        page.select_option("#audio-source", "mic")  # the fake microphone: espeak-ng speech as the host voice

        # A wrong token: refused before any media flows, and the page says so.
        page.fill("#token", "not-the-token")
        page.click("#start")
        page.wait_for_function("window.f2fDebug.state === 'failed'", timeout=10_000)
        assert "token" in page.inner_text("#error").lower()
        assert gateway.app.state.gateway.sessions == {}

        page.fill("#token", gateway.token)
        clicked = time.monotonic()
        page.click("#start")
        page.wait_for_function(
            f"window.f2fDebug.framesShown >= {MIN_FRAMES} && window.f2fDebug.motionMessages > 0",
            timeout=45_000)
        elapsed = time.monotonic() - clicked
        state = _debug(page)
        assert state["state"] == "live", state
        assert state["lastError"] is None, state["lastError"]
        assert page.is_hidden("#error")
        session_id = state["sessionId"]
        assert session_id

        # The λ_video slider PATCHes the session; the motion messages carry the new value.
        page.locator("#lambda").fill("0")
        page.wait_for_function("window.f2fDebug.lastMotion && window.f2fDebug.lastMotion.lambda_video === 0",
                               timeout=10_000)

        # Let the overlay refresh, then keep a picture of the page.
        page.wait_for_timeout(1200)
        screenshot = artifacts_dir / "browser.png"
        page.screenshot(path=str(screenshot))

        status, stats = gateway.get(f"v1/sessions/{session_id}")
        assert status == 200, stats
        assert stats["partner_frames_received"] > 0, stats
        assert stats["host_audio_samples_received"] > 0, stats
        assert stats["frames_sent"] >= MIN_FRAMES, stats

        state = _debug(page)
        motion = state["lastMotion"]
        assert {"frame", "pts", "pose", "blendshapes", "source", "lambda_video"} <= set(motion), motion
        assert "jawOpen" in motion["blendshapes"], motion
        assert state["events"] > 0, "no message on the events WebSocket"
        latency = state["latency"]

        def fmt(key: str) -> str:
            return f"{latency[key]:.0f} ms" if key in latency else "n/a"

        report(f"browser e2e: {state['framesShown']} host frames shown in Chromium "
               f"({state['fps']:.1f} fps shown at the end), {state['motionMessages']} motion messages, "
               f"first frame {state['firstFrameMs']:.0f} ms after Start, "
               f"{MIN_FRAMES} frames shown {elapsed:.1f} s after Start")
        report(f"browser e2e: server counted {stats['partner_frames_received']} partner frames "
               f"({stats['faces_seen']} with a face), {stats['host_audio_samples_received']} host audio samples "
               f"(16 kHz); sent {stats['frames_sent']} frames, skipped {stats['frames_skipped']}, "
               f"server fps {stats['fps']}, server first frame {stats['first_frame_ms']} ms after connect")
        report(f"browser e2e: page latency voice->motion ~{fmt('voiceToMotionMs')}, "
               f"voice->shown ~{fmt('voiceToShownMs')}, receive->display {fmt('playoutMs')}")
        report(f"browser e2e: screenshot {screenshot}")

        # Stop ends the session on the server too.
        page.click("#stop")
        page.wait_for_function("window.f2fDebug.state === 'idle'", timeout=10_000)
        deadline = time.monotonic() + 5
        while (status := gateway.get(f"v1/sessions/{session_id}")[0]) != 404:
            assert time.monotonic() < deadline, f"session still answers {status} after Stop"
            time.sleep(0.2)
        assert not page_errors, page_errors
    finally:
        page.close()


def test_demo_page_text_to_speech_without_camera(browser, gateway, report):
    """Host voice from the server's text -> speech box, no camera: the host listens, then speaks."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        page.goto(gateway.url, wait_until="load")
        assert page.input_value("#audio-source") == "tts"  # the default
        page.fill("#token", gateway.token)
        page.uncheck("#use-camera")
        page.click("#start")
        page.wait_for_function("window.f2fDebug.state === 'live' && window.f2fDebug.framesShown >= 10",
                               timeout=30_000)
        session_id = _debug(page)["sessionId"]
        assert page.is_enabled("#say")

        page.fill("#say-text", "Nice to meet you.")
        page.click("#say")
        deadline = time.monotonic() + 10
        while True:
            status, stats = gateway.get(f"v1/sessions/{session_id}")
            assert status == 200, stats
            if stats["say_samples_injected"] > 0:
                break
            assert time.monotonic() < deadline, f"say never reached the session: {stats}"
            time.sleep(0.2)
        assert not stats["has_partner_video"] and stats["partner_frames_received"] == 0, stats
        assert not stats["has_host_audio"] and stats["host_audio_samples_received"] == 0, stats

        state = _debug(page)
        assert state["lastError"] is None, state["lastError"]
        assert state["lastMotion"]["source"]["partner_pts"] is None, state["lastMotion"]
        report(f"browser e2e (text to speech, no camera): {state['framesShown']} frames shown, "
               f"{state['motionMessages']} motion messages, say injected {stats['say_samples_injected']} samples")
        page.click("#stop")
        page.wait_for_function("window.f2fDebug.state === 'idle'", timeout=10_000)
        assert not page_errors, page_errors
    finally:
        page.close()
