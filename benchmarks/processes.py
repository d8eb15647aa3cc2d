"""The servers a benchmark drives, each in its own process (as in production, and so that the client's
work in the benchmark process does not share a GIL with them): the gateway (`python -m server serve`)
and the bare echo server (`python -m benchmarks.echo_server`). Both answer GET /readyz; their CPU
time is read from /proc, threads included.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def cpu_share_probe(seconds: float = 1.0) -> float:
    """The fraction of one core a busy loop gets right now: how much of the machine other work leaves
    (with autogroup scheduling, `nice` in other sessions does not give this process more)."""
    start_wall, start_cpu = time.monotonic(), time.process_time()
    while time.monotonic() - start_wall < seconds:
        pass
    return round((time.process_time() - start_cpu) / (time.monotonic() - start_wall), 2)


def machine_record(load_at_start: list[float], cpu_share: float) -> dict:
    """What a result JSON says of the machine: it is shared, so the load at both ends goes with it."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_start": load_at_start,
            "cpu_share_of_a_busy_loop_at_start": cpu_share,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def config_record(config) -> dict:
    """A benchmark's config dataclass as JSON (paths as text, without the log folder)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()
            if k != "log_dir"}


@dataclass
class ServiceProcess:
    """A server on a free loopback port; `start()` returns once GET /readyz answers 200."""

    name: str
    args: tuple[str, ...]  # after `python -m`; "{port}" is replaced by the port
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> "ServiceProcess":
        command = [sys.executable, "-m", *(a.replace("{port}", str(self.port)) for a in self.args)]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **self.env}
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.name} was not ready within {timeout_s:.0f} s: {self.log_tail()}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-chars:]
        return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)


def gateway_process(model_repository: Path, *, early_delivery: bool = True, device: str = "cpu",
                    max_sessions: int = 4, log_path: Path | None = None) -> ServiceProcess:
    """The f2f gateway as `make serve` runs it (embedded backend), on loopback, rate limits off
    (a benchmark opens sessions faster than a user would)."""
    return ServiceProcess(
        name="gateway" if early_delivery else "gateway (aiortc receive hold)",
        args=("server", "serve", "--host", "127.0.0.1", "--port", "{port}", "--model-repository",
              str(model_repository), "--ice-loopback", "--log-level", "warning", "--device", device),
        env={"F2F_EARLY_DELIVERY": "1" if early_delivery else "0", "F2F_MAX_SESSIONS": str(max_sessions),
             "F2F_RATE_LIMIT_PER_S": "0", "F2F_SESSION_RATE_PER_MIN": "0"},
        log_path=log_path)


def echo_process(*, early_delivery: bool = True, log_path: Path | None = None) -> ServiceProcess:
    args = ("benchmarks.echo_server", "--port", "{port}") + (() if early_delivery else ("--no-early-delivery",))
    return ServiceProcess(name="echo server" if early_delivery else "echo server (aiortc receive hold)",
                          args=args, log_path=log_path)
