"""Real gateways for tests: in this event loop (uvicorn.Server as a task) or as a `python -m server serve`
process. Both use the real EmbeddedEngine on a model repository and real aiortc over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import REPO_ROOT, ServiceProcess, free_port

__all__ = ["REPO_ROOT", "free_port", "gateway_in_loop", "gateway_in_thread", "gateway_subprocess"]


@dataclass
class InProcessGateway:
    url: str
    app: object
    server: object

    @property
    def gateway(self):
        return self.app.state.gateway


def _uvicorn_gateway(model_repository: Path | None, engine, overrides: dict):
    """The gateway's config, app and an unstarted uvicorn server on a free loopback port."""
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
    return config, app, server


@contextlib.asynccontextmanager
async def gateway_in_loop(model_repository: Path | None, engine=None, **overrides):
    """Serve the gateway from the running event loop; yields an InProcessGateway (url ends without '/').
    `engine`: an unstarted engine to serve instead of the model repository's embedded one."""
    config, app, server = _uvicorn_gateway(model_repository, engine, overrides)
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


def gateway_subprocess(model_repository: Path, token: str | None = None, extra_args: tuple[str, ...] = (),
                       log_path: Path | None = None) -> ServiceProcess:
    """`python -m server serve` on a free port, with 127.0.0.1 ICE candidates (the benchmarks' launcher);
    `start()` returns it once /readyz answers."""
    args = ("server", "serve", "--port", "{port}", "--host", "127.0.0.1", "--model-repository", str(model_repository),
            "--ice-loopback", "--log-level", "warning", *extra_args, *(("--token", token) if token else ()))
    return ServiceProcess("gateway", args, log_path=log_path)


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

    config, app, server = _uvicorn_gateway(model_repository, engine, overrides)
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
