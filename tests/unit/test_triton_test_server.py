"""The tests' Triton launcher hands its access token to the server script intact, whatever the token
looks like (a random url-safe token begins with "-" one time in 64; argparse read that as a flag and
the whole Triton fixture failed to start)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import pytriton_server
from tests.support.triton_process import TritonServer


@pytest.mark.parametrize("token", ["-starts-with-a-dash", "--looks-like-a-flag", "_plain_token"])
def test_the_launch_command_carries_any_token_to_the_server(tmp_path: Path, token: str):
    server = TritonServer(model_repository=tmp_path / "repo", workdir=tmp_path, access_token=token)
    command, env = server.launch_command(tmp_path / "tmp")
    assert command[1:3] == ["-m", "tests.support.pytriton_server"]
    assert token not in command  # not in argv, where `ps` shows it

    args = pytriton_server.parse_arguments(command[3:], env)
    assert args.access_token == token
    assert args.grpc_port == server.grpc_port


def test_a_dashed_token_given_on_the_command_line_needs_the_equals_form(tmp_path: Path):
    argv = ["--model-repository", str(tmp_path), "--access-token=-dash"]
    assert pytriton_server.parse_arguments(argv, {}).access_token == "-dash"
    with pytest.raises(SystemExit):
        pytriton_server.parse_arguments(["--model-repository", str(tmp_path), "--access-token", "-dash"], {})
