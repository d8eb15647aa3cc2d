"""End-to-end fixtures: the real gateway, fake camera/microphone files, a real headless Chromium.

`gateway`: `server.app.create_app` on the tiny exported avatar (embedded onnxruntime engine), served
by uvicorn on a free loopback port in a background thread, with loopback ICE candidates and one API
token. Started once per module.

Chromium is Debian's `/usr/bin/chromium` (override with F2F_CHROMIUM), driven through Playwright's
Python API with `executable_path`; Playwright's own browser downloads are never used. Its camera is
a y4m cut from a synthetic episode (the guest on screen) and its microphone an espeak-ng wav; both
loop for as long as the page reads them.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.media import FakeMedia, make_fake_media, missing_tools

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"  # gitignored; screenshots and other evidence of a run

# The environment facts of the shared design: WebRTC over loopback, fake devices, no GPU, no network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


GATEWAY_START_TIMEOUT_S = 120.0  # engine load + face-mesh warm-up; ~3 s on an idle machine


@dataclass(frozen=True)
class RunningGateway:
    url: str  # http://127.0.0.1:PORT/ (the demo page)
    token: str  # the bearer token the gateway accepts
    app: object  # the FastAPI app (app.state.gateway is the server.gateway.Gateway)

    def get(self, path: str) -> tuple[int, dict]:
        """GET url+path with the token -> (status, JSON body)."""
        request = urllib.request.Request(self.url + path.lstrip("/"),
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            body = error.read()
            return error.code, json.loads(body) if body else {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tiny_model_repository):
    """The real gateway (FastAPI + aiortc + EmbeddedEngine on the tiny avatar) on a free port."""
    import uvicorn

    from server.app import create_app
    from server.config import ServerConfig

    port = _free_port()
    token = secrets.token_urlsafe(12)
    config = ServerConfig(host="127.0.0.1", port=port, model_repository=tiny_model_repository,
                          ice_loopback=True, api_tokens=(token,), log_level="warning")
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="f2f-gateway", daemon=True)
    thread.start()
    running = RunningGateway(f"http://127.0.0.1:{port}/", token, app)
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
    while True:
        try:
            if running.get("readyz")[0] == 200:
                break
        except OSError:
            pass
        if not thread.is_alive():
            raise RuntimeError("the gateway thread ended during start-up (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the gateway was not ready within {GATEWAY_START_TIMEOUT_S:.0f} s")
        time.sleep(0.2)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        if thread.is_alive():
            warnings.warn("the gateway thread did not stop within 15 s", RuntimeWarning)


def chromium_path() -> Path:
    return Path(os.environ.get("F2F_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def fake_media(tmp_path_factory) -> FakeMedia:
    """Partner camera (y4m, 640x360, 25 fps, a few seconds of the guest) and host speech (wav, 48 kHz)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"fake media needs {', '.join(missing)} on PATH")
    return make_fake_media(tmp_path_factory.mktemp("fake_media"))


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's Chromium (or F2F_CHROMIUM); the test skips, saying why, when it or Playwright is missing."""
    executable = chromium_path()
    if not executable.is_file():
        pytest.skip(f"{executable} is absent: install Debian's chromium (scripts/setup.sh does) "
                    "or point F2F_CHROMIUM at a Chromium binary")
    pytest.importorskip("playwright.sync_api", reason="the python package playwright is not installed")
    return executable


@pytest.fixture(scope="session")
def chromium_flags(chromium_executable, fake_media) -> list[str]:
    return CHROMIUM_FLAGS + [
        f"--use-file-for-fake-video-capture={fake_media.camera_y4m}",
        f"--use-file-for-fake-audio-capture={fake_media.microphone_wav}",
    ]


@pytest.fixture(scope="module")
def browser(chromium_executable, chromium_flags):
    """A headless Chromium with the fake camera and microphone, one per test module (Playwright's sync
    API runs its own event loop; keeping it module-scoped keeps it away from other modules' asyncio tests)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_executable), headless=True,
                                             args=chromium_flags)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
