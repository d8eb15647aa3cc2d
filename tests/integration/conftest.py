"""Real servers for integration tests.

`triton_server`: the tiny model repository served by a real Triton (pytriton's bundled binary, see
`tests/support/pytriton_server.py`) on free loopback ports. Started once per session (about 8 s on
2 cores) and idle (no CPU) between tests; a test that kills it (`kill()`: SIGKILL of the whole process
group, a crash) leaves it to the next test's fixture to start it again on the same ports. It
serves with an access token (`server.access_token`): pass it to clients that register shared memory.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.triton_process import TritonServer

@pytest.fixture(scope="session")
def triton_server_session(tiny_model_repository, tmp_path_factory):
    server = TritonServer(tiny_model_repository, tmp_path_factory.mktemp("pytriton_server"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def triton_server(triton_server_session) -> TritonServer:
    """The session's Triton server, running (started again if an earlier test killed it)."""
    triton_server_session.ensure_running()
    return triton_server_session
