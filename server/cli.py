"""`f2f serve` and `f2f client`: argument parsers for f2f/cli.py (and `python -m server`).

Flags override the F2F_* environment variables, which override the defaults of `ServerConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.config import BACKENDS, DEVICES, VIDEO_CODECS, IceServer, ServerConfig


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="run the WebRTC gateway (the demo page is at /)",
        description="Serve the f2f gateway with uvicorn. Every flag also has an F2F_* environment variable "
                    "(docs/api.md); flags win.")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8080)")
    parser.add_argument("--backend", choices=BACKENDS, help="inference backend (default embedded)")
    parser.add_argument("--model-repository", type=Path, help="the exported avatar (a Triton model repository)")
    parser.add_argument("--triton-url", help="Triton gRPC host:port (triton backend)")
    parser.add_argument("--device", choices=DEVICES, help="embedded backend: cpu, cuda or tensorrt")
    parser.add_argument("--max-sessions", type=int, help="session cap (default 4)")
    parser.add_argument("--token", action="append", dest="api_tokens", metavar="TOKEN",
                        help="require this bearer token (repeatable; also F2F_API_TOKENS=a,b)")
    parser.add_argument("--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
                        help="allow this browser origin (repeatable)")
    parser.add_argument("--ice-server", action="append", dest="ice_server_urls", metavar="URL",
                        help="STUN/TURN URL for the gateway's peer connections (repeatable)")
    parser.add_argument("--ice-username", help="username for the TURN servers given with --ice-server")
    parser.add_argument("--ice-credential", help="credential for the TURN servers given with --ice-server")
    parser.add_argument("--ice-loopback", action="store_true", default=None,
                        help="also offer 127.0.0.1 ICE candidates (clients on this machine without a network)")
    parser.add_argument("--video-codec", choices=VIDEO_CODECS, help="default host video codec preference")
    parser.add_argument("--lambda-video", type=float, dest="default_lambda_video",
                        help="default video guidance scale of new sessions")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(run=run_serve)
    return parser


def add_client_parser(subparsers) -> argparse.ArgumentParser:
    from clients.python.cli import add_arguments

    parser = subparsers.add_parser(
        "client", help="stream files or synthetic media to a gateway and record the avatar",
        description="Send partner video + host audio (files or --synthetic), record the generated host "
                    "(MP4 with video and audio) and the motion messages (JSONL).")
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    overrides = {name: getattr(args, name, None) for name in (
        "host", "port", "backend", "model_repository", "triton_url", "device", "max_sessions", "video_codec",
        "default_lambda_video", "log_level", "ice_loopback")}
    if args.api_tokens:
        overrides["api_tokens"] = tuple(args.api_tokens)
    if args.cors_origins:
        overrides["cors_origins"] = tuple(args.cors_origins)
    if args.ice_server_urls:
        overrides["ice_servers"] = tuple(
            IceServer(urls=(url,), username=args.ice_username if url.startswith("turn") else None,
                      credential=args.ice_credential if url.startswith("turn") else None)
            for url in args.ice_server_urls)
    return ServerConfig.from_env(**overrides)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"f2f serve: {error}", file=sys.stderr)
        return 2
    if config.model_repository is None and config.backend == "embedded":
        print("f2f serve: the embedded backend needs an avatar: --model-repository DIR (or F2F_MODEL_REPOSITORY)",
              file=sys.stderr)
        return 2
    if config.model_repository is not None and not config.model_repository.is_dir():
        print(f"f2f serve: model repository {config.model_repository} is not a directory", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.log_level != "debug":  # aioice logs every candidate pair at INFO
        logging.getLogger("aioice").setLevel(logging.WARNING)
    app = create_app(config)
    print(f"f2f gateway on http://{config.host}:{config.port} ({config.backend} backend, "
          f"model repository {config.model_repository})", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level, access_log=False,
                ws="websockets-sansio")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(commands)
    add_client_parser(commands)
    args = parser.parse_args(argv)
    return args.run(args)


__all__ = ["add_client_parser", "add_serve_parser", "config_from_args"]
