"""A real Triton server process for tests and benchmarks: pytriton's bundled binary serving a model
repository through `tests/support/pytriton_server.py` on free loopback ports, in its own process
group (so `kill()` is a crash of the whole server, as in production)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0  # a cold start on a busy 2-core CI machine; normally ~8 s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonServer:
    """One `python -m tests.support.pytriton_server` process group, owned by the test session."""

    model_repository: Path
    workdir: Path
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    ort_threads: int = 1  # onnxruntime intra-op threads per served model
    process: subprocess.Popen | None = None
    start_seconds: list[float] = field(default_factory=list)  # one entry per (re)start
    killed_at: float | None = None  # time.monotonic() of the last SIGKILL
    _starts: int = 0

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self._starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def model_names(self) -> list[str]:
        return sorted(p.parent.name for p in self.model_repository.glob("*/config.pbtxt"))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch_command(self, tmp: Path) -> tuple[list[str], dict[str, str]]:
        """The server's argv and environment. The access token travels in the environment, not argv:
        a random token may begin with "-" (argparse would read it as a flag) and argv is visible in `ps`."""
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1",
               "F2F_TRITON_ACCESS_TOKEN": self.access_token}
        command = [sys.executable, "-m", "tests.support.pytriton_server",
                   "--model-repository", str(self.model_repository),
                   "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
                   "--metrics-port", str(self.metrics_port),
                   "--workspace", str(tmp / "pytriton"), "--ort-threads", str(self.ort_threads)]
        return command, env

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if self.alive():
            return
        self._starts += 1
        # pytriton's workspace (its copy of tritonserver, sockets) and temporary files land under
        # workdir; what the Python backend puts in /tmp and /dev/shm is removed by kill()/stop().
        tmp = self.workdir / f"tmp-{self._starts}"
        tmp.mkdir(parents=True)
        command, env = self.launch_command(tmp)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(started + timeout_s, timeout_s)
        except BaseException:
            self.kill()
            raise
        self.start_seconds.append(time.monotonic() - started)

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(f"pytriton server exited with {self.process.returncode} before it was "
                                       f"ready; its log:\n{self.log()[-6000:]}")
                try:
                    # The server answers ready before pytriton has loaded the models (explicit model
                    # control): wait for every model of the repository too.
                    if client.is_server_ready(client_timeout=1.0) and all(
                            client.is_model_ready(name, client_timeout=1.0) for name in self.model_names()):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise TimeoutError(f"pytriton server on {self.grpc_url} not ready after {timeout_s:.0f} s; "
                           f"its log:\n{self.log()[-6000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: the server crashes, as a real one can."""
        if self.process is None:
            return
        leftovers = self._leftovers()
        self.killed_at = time.monotonic()
        self._kill_group()
        self._remove(leftovers)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (pytriton unloads the models and exits), then SIGKILL whatever is left."""
        if self.process is None:
            return
        # Taken first: tritonserver gives up unloading after its exit timeout and leaves some behind.
        leftovers = self._leftovers()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()  # backend stubs a slow shutdown left behind
        self._remove(leftovers)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    @staticmethod
    def _remove(paths: set[Path]) -> None:
        for path in paths:  # what a clean shutdown removes
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

    def _leftovers(self) -> set[Path]:
        """POSIX shared memory that the group maps (pytriton's tensor store, the Python backend's
        regions) and the model folders the backend stubs run from (the backend makes them under
        /tmp whatever TMPDIR says): a SIGKILL leaves them behind."""
        found: set[Path] = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != self.process.pid:  # pgid
                    continue
                maps = (stat.parent / "maps").read_text()
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            found |= {Path(line.split(None, 5)[5]) for line in maps.splitlines()
                      if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith("/dev/shm/")}
            for arg in argv:
                parts = Path(arg.decode(errors="replace")).parts
                if len(parts) > 2 and parts[1] == "tmp" and parts[2].startswith("folder"):
                    found.add(Path("/tmp", parts[2]))
        # Only the server's own regions: a client's registered regions are mapped here too.
        return {p for p in found if p.name.startswith(("psm_", "pytrtion", "folder")) and " (deleted)" not in str(p)}

    def restart(self) -> None:
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        if not self.alive():
            self.kill()  # reap the old group, if any
            self.start()
