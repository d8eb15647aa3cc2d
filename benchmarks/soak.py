"""`f2f bench soak`: N concurrent client sessions for M minutes against one gateway process.

    f2f bench soak --sessions 2 --minutes 10 --json benchmarks/results/soak.json --plot benchmarks/results/soak.png

The gateway runs as `make serve` runs it (`python -m server serve`, embedded backend, loopback), in its
own process so that its memory, threads and descriptors are its own. The clients (the Python client
library, a drawn moving face + a tone and speech) run in this process. Every `sample_interval_s` it
records the gateway's RSS, threads and open descriptors (from /proc), its asyncio tasks (from
/metrics: `f2f_asyncio_tasks`) and each session's server-side stats. A session that ends before the
soak does (the server closed it, the connection failed) is a crash: it is recorded and the client
reconnects; so is a gateway process that exits.

Figures:
- `frames` per session: sent by the client (partner video, host audio) and received (host video,
  host audio, motion messages), the server's made/sent/skipped counts, and the drops between them;
- `rss_growth_pct`: RSS at the end against RSS after the warm-up (medians of 3 samples each);
- `av_drift_ms`: how far the host video and host audio drift apart at the client over the run. For
  each received frame, arrival time minus media time (pts); per 10 s window the median for video
  minus the median for audio is the A/V offset of that window; the drift is the largest change of
  that offset from the first window after the warm-up (absolute offset: `av_offset_ms`, which also
  holds the constant receive-hop difference of the two tracks). `av_drift_trend_ms` is the sustained
  part: the median offset of the last quarter of the windows minus that of the first quarter.
  Arrival is what a client that plays at once would see; a browser's jitter buffer and RTCP lip
  sync absorb late bursts (audio of skipped frames, sent late when the machine falls behind).
- `frames_skipped_pct`: frames the gateway skipped (late, engine) of all it was due to make: how
  loaded the machine was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.processes import gateway_process

log = logging.getLogger(__name__)

WINDOW_S = 10.0  # A/V offset window
TARGETS = {"crashes": 0, "rss_growth_pct_max": 10.0, "av_drift_ms_max": 40.0}


@dataclass(frozen=True)
class SoakConfig:
    sessions: int = 2
    minutes: float = 10.0
    model_repository: Path | None = None  # None: the default avatar (exported when needed)
    warmup_s: float | None = None  # None: a quarter of the run, at most 60 s
    sample_interval_s: float = 5.0
    partner_size: tuple[int, int] = (320, 240)

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, 0.25 * self.seconds)


# -- the gateway's resources ---------------------------------------------------------------------

def process_figures(pid: int) -> dict:
    """RSS (MB), threads and open descriptors of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024.0, 1), "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def metric_value(metrics_text: str, name: str) -> float | None:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# -- one client slot ------------------------------------------------------------------------------

@dataclass
class SlotRecord:
    """Everything one session slot saw (a slot reconnects after a crash: several session ids)."""

    slot: int
    session_ids: list[str] = field(default_factory=list)
    crashes: list[dict] = field(default_factory=list)
    partner_frames_sent: int = 0
    audio_frames_sent: int = 0
    video_frames_received: int = 0
    audio_frames_received: int = 0
    motion_messages_received: int = 0
    server: list[dict] = field(default_factory=list)  # the last stats of each session
    video_times: list[tuple[float, float]] = field(default_factory=list)  # (arrival, pts s), this connection
    audio_times: list[tuple[float, float]] = field(default_factory=list)
    av_windows: list[dict] = field(default_factory=list)  # per window: t, offset_ms, connection


class SoakSlot:
    def __init__(self, index: int, url: str, config: SoakConfig, started_at: float):
        self.record = SlotRecord(index)
        self.url = url
        self.config = config
        self.started_at = started_at
        self.client = None
        self.connection = 0

    async def connect(self) -> None:
        from clients.python import AvatarClient, ClientOptions
        from clients.python.media import SyntheticFaceTrack, SyntheticSpeechTrack

        self.connection += 1
        self.record.video_times, self.record.audio_times = [], []
        self.client = AvatarClient(self.url, partner=SyntheticFaceTrack(size=self.config.partner_size),
                                   host_audio=SyntheticSpeechTrack(seed=self.record.slot),
                                   options=ClientOptions(loopback=True), on_video=self._video,
                                   on_audio=self._audio, on_motion=self._motion)
        self.record.session_ids.append(await self.client.start())

    def _video(self, frame, arrived: float) -> None:
        self.record.video_frames_received += 1
        self.record.video_times.append((arrived, float(frame.pts * frame.time_base)))

    def _audio(self, frame, arrived: float) -> None:
        self.record.audio_frames_received += 1
        self.record.audio_times.append((arrived, float(frame.pts * frame.time_base)))

    def _motion(self, message, arrived: float) -> None:
        self.record.motion_messages_received += 1

    def close_windows(self, now: float) -> None:
        """A/V offset of every complete window not yet measured (then its samples are dropped)."""
        rec = self.record
        while rec.video_times and rec.audio_times and now - rec.video_times[0][0] >= WINDOW_S:
            start = rec.video_times[0][0]
            video = [a - p for a, p in rec.video_times if a < start + WINDOW_S]
            audio = [a - p for a, p in rec.audio_times if a < start + WINDOW_S]
            rec.video_times = [(a, p) for a, p in rec.video_times if a >= start + WINDOW_S]
            rec.audio_times = [(a, p) for a, p in rec.audio_times if a >= start + WINDOW_S]
            if len(video) >= 25 and len(audio) >= 50:
                offset = (statistics.median(video) - statistics.median(audio)) * 1000.0
                rec.av_windows.append({"t": round(start + WINDOW_S / 2 - self.started_at, 1),
                                       "offset_ms": round(offset, 2), "connection": self.connection})

    async def check(self) -> dict | None:
        """The session's server stats; None (and a crash recorded, and a new session) when it ended."""
        client = self.client
        state = client.pc.connectionState if client.pc else "closed"
        reason = None
        stats = None
        if state in ("failed", "closed"):
            reason = f"client connection {state}"
        else:
            try:
                stats = await client.server_stats()
            except Exception as error:  # noqa: BLE001 - a 404 means the server ended the session
                reason = f"server stats failed: {error}"
        if reason is None:
            return stats
        self.record.crashes.append({"t": round(time.monotonic() - self.started_at, 1),
                                    "session_id": client.session_id, "reason": reason})
        log.warning("slot %d: session %s ended unexpectedly (%s); reconnecting", self.record.slot,
                    client.session_id, reason)
        await self.finish(stats_too=False)
        await self.connect()
        return None

    async def finish(self, stats_too: bool = True) -> None:
        client = self.client
        if client is None:
            return
        if stats_too:
            try:
                self.record.server.append(await client.server_stats())
            except Exception as error:  # noqa: BLE001
                self.record.crashes.append({"t": round(time.monotonic() - self.started_at, 1),
                                            "session_id": client.session_id, "reason": f"final stats: {error}"})
        self.record.partner_frames_sent += len(client.partner.send_log) if client.partner else 0
        self.record.audio_frames_sent += len(client.host_audio.send_log) if client.host_audio else 0
        await client.close()
        self.client = None


# -- the run --------------------------------------------------------------------------------------

async def _soak(config: SoakConfig, url: str, pid: int, gateway) -> dict:
    import httpx

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    slots = [SoakSlot(i, url, config, started) for i in range(config.sessions)]
    for slot in slots:
        await slot.connect()
    samples: list[dict] = []
    gateway_crash = None
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while (elapsed := time.monotonic() - started) < config.seconds:
            await asyncio.sleep(min(config.sample_interval_s, max(0.0, config.seconds - elapsed)))
            if gateway.process.poll() is not None:
                gateway_crash = f"gateway exited with {gateway.process.returncode}"
                break
            now = time.monotonic()
            sample = {"t": round(now - started, 1), **process_figures(pid)}
            try:
                sample["asyncio_tasks"] = metric_value((await http.get("/metrics")).text, "f2f_asyncio_tasks")
            except httpx.HTTPError:
                sample["asyncio_tasks"] = None
            sample["sessions"] = []
            for slot in slots:
                slot.close_windows(now)
                stats = await slot.check()
                sample["sessions"].append(None if stats is None else {
                    k: stats[k] for k in ("fps", "frames_sent", "frames_skipped", "partner_frames_received",
                                          "host_audio_underrun_samples", "step_ms_mean")})
            samples.append(sample)
    for slot in slots:
        if gateway_crash is None:
            await slot.finish()
        elif slot.client is not None:
            await slot.client.close(delete=False)
    return _summarise(config, slots, samples, gateway_crash, time.monotonic() - started, load_at_start)


def _summarise(config: SoakConfig, slots: list[SoakSlot], samples: list[dict], gateway_crash: str | None,
               seconds: float, load_at_start: list[float]) -> dict:
    warm = [s for s in samples if s["t"] >= config.warmup] or samples[-1:]
    first, last = warm[:3], warm[-3:]
    rss_start = statistics.median(s["rss_mb"] for s in first) if first else float("nan")
    rss_end = statistics.median(s["rss_mb"] for s in last) if last else float("nan")
    sessions, drifts, trends, offsets = [], [], [], []
    for slot in slots:
        rec = slot.record
        windows = [w for w in rec.av_windows if w["t"] >= config.warmup]
        by_connection: dict[int, list[float]] = {}
        for w in windows:
            by_connection.setdefault(w["connection"], []).append(w["offset_ms"])
        drift = max((max(abs(o - values[0]) for o in values) for values in by_connection.values()), default=None)
        if drift is not None:
            drifts.append(drift)
        for values in by_connection.values():
            quarter = max(1, len(values) // 4)
            trends.append(statistics.median(values[-quarter:]) - statistics.median(values[:quarter]))
        offsets += [w["offset_ms"] for w in windows]
        server = rec.server
        made = sum(s["frames_made"] for s in server)
        sent = sum(s["frames_sent"] for s in server)
        sessions.append({
            "slot": rec.slot, "session_ids": rec.session_ids, "crashes": rec.crashes,
            "client_sent": {"partner_video_frames": rec.partner_frames_sent, "host_audio_frames": rec.audio_frames_sent},
            "client_received": {"host_video_frames": rec.video_frames_received,
                                "host_audio_frames": rec.audio_frames_received,
                                "motion_messages": rec.motion_messages_received},
            "server": {key: sum(s[key] for s in server) for key in (
                "partner_frames_received", "partner_frames_processed", "partner_frames_dropped", "faces_seen",
                "frames_made", "frames_sent", "frames_skipped", "frames_skipped_late", "frames_skipped_engine",
                "frames_dropped_backlog", "host_audio_underrun_samples", "host_audio_dropped_samples",
                "motion_messages_sent", "motion_messages_dropped", "engine_errors")} if server else None,
            "drops": {"frames_skipped_by_server": sum(s["frames_skipped"] for s in server),
                      "frames_lost_in_transit": max(0, sent - rec.video_frames_received),
                      "partner_frames_not_received": max(0, rec.partner_frames_sent
                                                         - sum(s["partner_frames_received"] for s in server))},
            "fps_received": round(rec.video_frames_received / seconds, 2),
            "frames_made": made,
            "av_drift_ms": None if drift is None else round(drift, 2),
            "av_windows": rec.av_windows,
        })
    crashes = (1 if gateway_crash else 0) + sum(len(s["crashes"]) for s in sessions)
    result = {
        "config": {**asdict(config), "model_repository": str(config.model_repository), "warmup_s": config.warmup},
        "machine": {"cpus": os.cpu_count(), "load_avg_start": load_at_start,
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
        "seconds": round(seconds, 1),
        "crashes": crashes,
        "gateway_crash": gateway_crash,
        "rss_growth_pct": round((rss_end - rss_start) / rss_start * 100.0, 2) if first else None,
        "rss_mb": {"after_warmup": rss_start, "end": rss_end, "max": max((s["rss_mb"] for s in samples), default=None),
                   "first": samples[0]["rss_mb"] if samples else None},
        "av_drift_ms": round(max(drifts), 2) if drifts else None,
        "av_drift_trend_ms": round(max(trends, key=abs), 2) if trends else None,
        "frames_skipped_pct": _skipped_pct(sessions),
        "av_offset_ms": {"median": round(statistics.median(offsets), 2) if offsets else None,
                         "min": min(offsets, default=None), "max": max(offsets, default=None)},
        "fds": _range(warm, "fds"), "threads": _range(warm, "threads"), "asyncio_tasks": _range(warm, "asyncio_tasks"),
        "sessions": sessions,
        "samples": samples,
        "targets": TARGETS,
    }
    result["passed"] = (result["crashes"] == TARGETS["crashes"]
                        and result["rss_growth_pct"] is not None
                        and result["rss_growth_pct"] < TARGETS["rss_growth_pct_max"]
                        and result["av_drift_ms"] is not None
                        and result["av_drift_ms"] <= TARGETS["av_drift_ms_max"])
    return result


def _skipped_pct(sessions: list[dict]) -> float | None:
    made = sum(s["server"]["frames_made"] for s in sessions if s["server"])
    skipped = sum(s["server"]["frames_skipped_late"] + s["server"]["frames_skipped_engine"]
                  for s in sessions if s["server"])
    return round(100.0 * skipped / (made + skipped), 1) if made + skipped else None


def _range(samples: list[dict], key: str) -> dict:
    values = [s[key] for s in samples if s.get(key) is not None]
    if not values:
        return {}
    return {"after_warmup": values[0], "end": values[-1], "min": min(values), "max": max(values)}


def run_soak(config: SoakConfig, logs: Path | None = None) -> dict:
    """Start the gateway, run the sessions, stop the gateway; -> the result dictionary."""
    from benchmarks.latency import default_model_repository

    with tempfile.TemporaryDirectory(prefix="f2f-bench-soak-") as scratch:
        repository = config.model_repository
        if repository is None:
            repository, _ = default_model_repository(None, Path(scratch))
            config = SoakConfig(**{**asdict(config), "model_repository": repository})
        log_path = (logs or Path(scratch)) / "gateway.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        gateway = gateway_process(repository, max_sessions=max(4, config.sessions), log_path=log_path).start()
        try:
            result = asyncio.run(_soak(config, gateway.url, gateway.process.pid, gateway))
        finally:
            gateway.stop()
        text = log_path.read_text(errors="replace")
        result["gateway_log"] = {"errors": text.count(" ERROR "), "tracebacks": text.count("Traceback"),
                                 "tail": text[-2000:] if ("Traceback" in text or " ERROR " in text) else ""}
    return result


def plot_soak(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] / 60.0 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    ax = axes[0][0]
    ax.plot(t, [s["rss_mb"] for s in samples], color="tab:blue")
    ax.axvline(result["config"]["warmup_s"] / 60.0, color="grey", linestyle=":", label="end of warm-up")
    ax.set(title=f"gateway RSS (growth after warm-up {result['rss_growth_pct']}%)", xlabel="minutes", ylabel="MB")
    ax.legend(loc="lower right")
    ax = axes[0][1]
    for key, color in (("fds", "tab:orange"), ("threads", "tab:green"), ("asyncio_tasks", "tab:purple")):
        ax.plot(t, [s.get(key) for s in samples], label=key, color=color)
    ax.set(title="gateway descriptors, threads, asyncio tasks", xlabel="minutes")
    ax.legend(loc="upper left")
    ax = axes[1][0]
    for index in range(result["config"]["sessions"]):
        fps = [(s["t"] / 60.0, s["sessions"][index]["fps"]) for s in samples if s["sessions"][index] is not None]
        ax.plot([a for a, _ in fps], [b for _, b in fps], label=f"session {index}")
    ax.set(title="host video fps per session (server)", xlabel="minutes", ylabel="fps", ylim=(0, 30))
    ax.legend(loc="lower right")
    ax = axes[1][1]
    for session in result["sessions"]:
        windows = session["av_windows"]
        ax.plot([w["t"] / 60.0 for w in windows], [w["offset_ms"] for w in windows], marker=".",
                label=f"session {session['slot']}")
    ax.set(title=f"A/V offset at the client (video - audio); drift {result['av_drift_ms']} ms",
           xlabel="minutes", ylabel="ms")
    ax.legend(loc="lower right")
    config = result["config"]
    fig.suptitle(f"f2f bench soak: {config['sessions']} sessions x {config['minutes']:g} min, "
                 f"{result['machine']['cpus']} CPU cores; crashes {result['crashes']}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- command line ---------------------------------------------------------------------------------

def add_soak_parser(benches) -> None:
    parser = benches.add_parser(
        "soak", help="N concurrent sessions for M minutes: crashes, RSS growth, descriptors, A/V drift",
        description="Runs N client sessions against one gateway process for M minutes and reports frames sent "
                    "and received per session, drops, the gateway's RSS, threads, descriptors and asyncio tasks "
                    "over time, and the A/V drift at the client.")
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--plot", type=Path, default=None, help="PNG (default: beside the JSON)")
    parser.add_argument("--model-repository", type=Path, default=None,
                        help="an exported avatar to serve (default: the default avatar, exported when needed)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="seconds before RSS growth and A/V drift are measured (default: a quarter, <= 60 s)")
    parser.add_argument("--sample-interval-s", type=float, default=5.0)
    parser.add_argument("--logs", type=Path, default=None, help="keep the gateway's log in this folder")
    parser.set_defaults(run=_run_soak)


def _run_soak(args) -> int:
    import sys

    if args.sessions < 1 or args.minutes <= 0:
        print("f2f bench soak: --sessions must be >= 1 and --minutes > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = SoakConfig(sessions=args.sessions, minutes=args.minutes, model_repository=args.model_repository,
                        warmup_s=args.warmup_s, sample_interval_s=args.sample_interval_s)
    result = run_soak(config, logs=args.logs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot = args.plot or args.json.with_suffix(".png")
    plot_soak(result, plot)
    for session in result["sessions"]:
        server = session["server"] or {}
        print(f"session {session['slot']}: sent {session['client_sent']}, received {session['client_received']}, "
              f"server made {server.get('frames_made')} sent {server.get('frames_sent')} skipped "
              f"{server.get('frames_skipped')}, {session['fps_received']} fps received, "
              f"A/V drift {session['av_drift_ms']} ms, crashes {len(session['crashes'])}")
    print(f"crashes {result['crashes']}; RSS {result['rss_mb']['after_warmup']} -> {result['rss_mb']['end']} MB "
          f"({result['rss_growth_pct']}% after warm-up); fds {result['fds']}; threads {result['threads']}; "
          f"asyncio tasks {result['asyncio_tasks']}; A/V drift {result['av_drift_ms']} ms "
          f"(sustained {result['av_drift_trend_ms']} ms, offset {result['av_offset_ms']}); frames skipped "
          f"{result['frames_skipped_pct']}%, load {result['machine']['load_avg_start']} -> "
          f"{result['machine']['load_avg_end']}; passed {result['passed']}")
    print(f"wrote {args.json} and {plot}", file=sys.stderr)
    return 0
