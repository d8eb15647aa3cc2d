"""`f2f client`: stream files (or synthetic media) to a gateway and record what comes back.

    f2f client --url http://127.0.0.1:8080 --partner partner.mp4 --host-audio host.wav --seconds 10 \
               --record out.mp4 --motion out.jsonl
    f2f client --url http://127.0.0.1:8080 --synthetic --seconds 10 --record out.mp4

Prints a JSON summary (frames, fps, first-frame delay, the server's own stats) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's base URL")
    parser.add_argument("--partner", type=Path, help="partner video file (mp4, y4m, ...), looped")
    parser.add_argument("--host-audio", type=Path, help="host audio file (wav, ...), looped")
    parser.add_argument("--synthetic", action="store_true",
                        help="send a drawn moving face and tone + espeak-ng speech for whatever file is not given")
    parser.add_argument("--no-loop", action="store_true", help="stop each file at its end instead of looping")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to stream after connecting")
    parser.add_argument("--record", type=Path, help="write what comes back to this MP4 (H.264 + AAC)")
    parser.add_argument("--motion", type=Path, help="write each motion message as one JSON line")
    parser.add_argument("--summary", type=Path, help="also write the JSON summary to this file")
    parser.add_argument("--token", help="bearer token, if the gateway requires one")
    parser.add_argument("--lambda-video", type=float, help="video guidance scale (0 = audio-only avatar)")
    parser.add_argument("--output-size", type=int, help="output frame side in pixels")
    parser.add_argument("--video-codec", choices=["VP8", "H264"], help="preferred host video codec")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="STUN server URL for the client's own peer connection (repeatable)")
    parser.add_argument("--loopback", action="store_true",
                        help="offer 127.0.0.1 ICE candidates (a gateway on this machine, no network)")
    parser.add_argument("--no-early-delivery", action="store_true",
                        help="keep aiortc's receive hold (one frame of video, four audio packets)")
    parser.add_argument("--keep-session", action="store_true",
                        help="do not DELETE the session at the end (the gateway frees it when media stops)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from clients.python.client import GatewayError

    from f2f.blas_threads import limit_blas_threads

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    limit_blas_threads()  # a spinning OpenBLAS worker would take a core from the media threads
    try:
        summary = asyncio.run(stream(args))
    except GatewayError as error:
        print(json.dumps({"error": error.message, "status": error.status}), file=sys.stderr)
        return 2
    except (ConnectionError, TimeoutError) as error:
        print(json.dumps({"error": str(error)}), file=sys.stderr)
        return 3
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary:
        args.summary.write_text(text)
    return 0


def _sources(args):
    from clients.python.media import FileAudioTrack, FileVideoTrack, SyntheticFaceTrack, SyntheticSpeechTrack

    loop = not args.no_loop
    partner = FileVideoTrack(args.partner, loop=loop) if args.partner else (
        SyntheticFaceTrack() if args.synthetic else None)
    host_audio = FileAudioTrack(args.host_audio, loop=loop) if args.host_audio else (
        SyntheticSpeechTrack() if args.synthetic else None)
    return partner, host_audio


async def stream(args: argparse.Namespace) -> dict:
    from clients.python.client import AvatarClient, ClientOptions, GatewayError
    from clients.python.recorder import MotionLog, Mp4Recorder

    partner, host_audio = _sources(args)
    recorder = Mp4Recorder(args.record) if args.record else None
    motion_log = MotionLog(args.motion) if args.motion else None
    frames_seen: list[int] = []

    def on_motion(message, arrived_at):
        frames_seen.append(message.get("frame", -1))
        if motion_log:
            motion_log.write(message, arrived_at)

    options = ClientOptions(token=args.token, lambda_video=args.lambda_video, output_size=args.output_size,
                            video_codec=args.video_codec, loopback=args.loopback,
                            early_delivery=not args.no_early_delivery,
                            ice_servers=[{"urls": url} for url in args.ice_server])
    client = AvatarClient(args.url, partner=partner, host_audio=host_audio, options=options,
                          on_video=recorder.video if recorder else None,
                          on_audio=recorder.audio if recorder else None, on_motion=on_motion)
    started = time.monotonic()
    server_stats = None
    try:
        session_id = await client.start()
        connected = time.monotonic()
        await asyncio.sleep(args.seconds)
        try:
            server_stats = await client.server_stats()
        except GatewayError as error:
            server_stats = {"error": error.message}
    finally:
        await client.close(delete=not args.keep_session)
        if recorder:
            await asyncio.get_running_loop().run_in_executor(None, recorder.close)
        if motion_log:
            motion_log.close()
    stats = client.stats
    return {
        "session_id": session_id,
        "seconds": args.seconds,
        "connect_ms": round((connected - started) * 1000, 1),
        "video_frames": stats.video_frames,
        "audio_frames": stats.audio_frames,
        "audio_seconds": round(stats.audio_samples / 48000, 3),
        "motion_messages": stats.motion_messages,
        "motion_first_frame": min(frames_seen) if frames_seen else None,
        "motion_last_frame": max(frames_seen) if frames_seen else None,
        "fps": round(stats.fps(), 2),
        "first_frame_ms": None if stats.first_frame_ms is None else round(stats.first_frame_ms, 1),
        "receive": client.receive_counts(),
        "partner_frames_sent": len(partner.send_log) if partner is not None else 0,
        "host_audio_frames_sent": len(host_audio.send_log) if host_audio is not None else 0,
        "record": str(args.record) if args.record else None,
        "motion": str(args.motion) if args.motion else None,
        "server": server_stats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="f2f client", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)
