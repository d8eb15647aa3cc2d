"""Real gateways for tests: in this event loop (uvicorn.Server as a task) or as a `python -m server serve`
process. Both use the real EmbeddedEngine on a model repository and real aiortc over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class InProcessGateway:
    url: str
    app: object
    server: object

    @property
    def gateway(self):
        return self.app.state.gateway


@contextlib.asynccontextmanager
async def gateway_in_loop(model_repository: Path | None, engine=None, **overrides):
    """Serve the gateway from the running event loop; yields an InProcessGateway (url ends without '/').
    `engine`: an unstarted engine to serve instead of the model repository's embedded one."""
    import uvicorn

    from server.app import create_app
    from server.config import ServerConfig

    settings = {"host": "127.0.0.1", "port": free_port(),
                "model_repository": Path(model_repository) if model_repository else None,
                "ice_loopback": True, "web_root": None, **overrides}
    config = ServerConfig(**settings)
    app = create_app(config, engine)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 120
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the gateway stopped during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not start within 120 s")
        await asyncio.sleep(0.05)
    try:
        yield InProcessGateway(f"http://{config.host}:{config.port}", app, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@dataclass
class GatewayProcess:
    """`python -m server serve` on a free port, with 127.0.0.1 ICE candidates."""

    model_repository: Path
    token: str | None = None
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout_s: float = 120.0) -> None:
        command = [sys.executable, "-m", "server", "serve", "--port", str(self.port), "--host", "127.0.0.1",
                   "--model-repository", str(self.model_repository), "--ice-loopback", "--log-level", "warning",
                   *self.extra_args]
        if self.token:
            command += ["--token", self.token]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.process.returncode}: {self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the gateway was not ready within {timeout_s} s: {self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


@dataclass
class ThreadGateway:
    url: str  # ends without '/'
    app: object
    token: str | None

    @property
    def gateway(self):
        return self.app.state.gateway

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@contextlib.contextmanager
def gateway_in_thread(model_repository: Path | None, engine=None, **overrides):
    """Serve the gateway from a background thread (its own event loop), for synchronous tests and tools
    that make their own requests (schemathesis, security probes); yields a ThreadGateway."""
    import threading

    import uvicorn

    from server.app import create_app
    from server.config import ServerConfig

    settings = {"host": "127.0.0.1", "port": free_port(),
                "model_repository": Path(model_repository) if model_repository else None,
                "ice_loopback": True, "web_root": None, **overrides}
    config = ServerConfig(**settings)
    app = create_app(config, engine)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, name="f2f-test-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the gateway thread ended during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the gateway did not start within 120 s")
        time.sleep(0.05)
    try:
        yield ThreadGateway(f"http://{config.host}:{config.port}", app,
                            config.api_tokens[0] if config.api_tokens else None)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
