"""`f2f bench latency`: how fast the avatar answers, where the time goes, and the WebRTC floor beside it.

One run, this machine, loopback:
- `avatar`: the gateway (`python -m server serve`, embedded backend, the default avatar, 256x256)
  driven by the Python client with a drawn partner face (640x480, 25 fps) and espeak-ng speech;
- `echo`: a bare aiortc echo server (benchmarks/echo_server.py) driven the same way: the partner
  video comes back unchanged. Its round trip is the floor: two receive hops, a decode and an
  encode, no model;
- `avatar-stock` / `echo-stock`: the same with aiortc's own receive hold at both ends (video frames
  held until the next frame's first packet, audio four packets): the gain of early delivery;
- `avatar-gpu`: the gateway with the networks on CUDA, where onnxruntime and a GPU allow it.
Variants alternate in `rounds` segments (a fresh session each), so load from other work on the
machine falls on all of them alike. A short unmeasured session warms each server up first.

What is measured (client clock, time.monotonic() in this process; definitions in docs/api.md):
- audio_to_photon_ms: the 20 ms audio packet holding the sample at a frame's `host_audio_pts` was
  handed to the client's sender -> that output frame arrived at the client (the frame's look-ahead
  of (K + L) frames + 7.5 ms is part of it by design);
- partner_to_photon_ms: partner frame handed to the sender -> the first output frame whose
  `partner_pts` is at least its pts arrived;
- first_frame_ms (connected -> first video frame), fps, frame_gap_ms (between video arrivals),
  av_offset_ms (arrival of the returned audio packet starting frame n's audio - arrival of video
  frame n; positive: audio later);
- the gateway's per-stage means from /metrics (`f2f_stage_seconds`, differenced per segment);
- echo round_trip_ms: partner frame handed to the sender -> the same frame (by pts) back.
Output frames are matched to motion messages by frame index: index = offset + pts / 3600, the offset
being the most common one between each frame and the motion message that arrived nearest to it.
The first `warmup_s` of each session is left out of fps, gaps and latencies.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.processes import (REPO_ROOT, ServiceProcess, config_record, cpu_share_probe, echo_process,
                                  gateway_process, machine_record, own_cpu_seconds)
from engines.repository import read_config, spec_of
from f2f.avatar_spec import AVATAR_STEP
from f2f.blas_threads import limit_blas_threads

FRAME_TICKS = 3600  # 90 kHz RTP ticks per 25 fps frame
AUDIO_PACKET_S = 0.02  # the client sends 20 ms audio frames
OPUS_FRAME_SAMPLES = 960  # 20 ms at 48 kHz: one returned audio frame
PACKETS_PER_FRAME = 2  # returned 20 ms audio packets per 40 ms video frame
VARIANTS = {  # name -> (target, early delivery)
    "avatar": ("avatar", True),
    "avatar-stock": ("avatar", False),
    "avatar-gpu": ("avatar-gpu", True),
    "echo": ("echo", True),
    "echo-stock": ("echo", False),
}
DEFAULT_VARIANTS = ("avatar", "echo", "echo-stock", "avatar-stock")
TARGETS = {  # issue 7, this 2-core machine, embedded backend, 256x256, loopback
    "fps": (">=", 24.5),
    "frame_gap_ms_p99": ("<=", 60.0),
    "first_frame_ms_median": ("<=", 500.0),
    "av_offset_ms_median_abs": ("<=", 40.0),
    "audio_to_photon_ms_p50": ("<=", 150.0),
    "audio_to_photon_ms_p95": ("<=", 200.0),
}


@dataclass(frozen=True)
class LatencyBenchConfig:
    model_repository: Path  # the exported avatar the gateway serves
    seconds: float = 60.0  # measured time per variant (split over the rounds)
    rounds: int = 3
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    warmup_s: float = 1.0  # left out at the start of each session
    warmup_session_s: float = 2.0  # unmeasured session per server before the run (0: none)
    output_size: int = 256
    avatar_source: str = ""  # what the model repository was exported from (for the JSON)
    log_dir: Path | None = None


# -- what one session records ---------------------------------------------------------------------

@dataclass
class SegmentRecord:
    variant: str
    target: str  # avatar | avatar-gpu | echo
    early_delivery: bool
    seconds: float
    started_at: float = 0.0
    connected_at: float | None = None
    ended_at: float = 0.0
    video: list[tuple[int, float]] = field(default_factory=list)  # (pts, 90 kHz, arrival)
    audio: list[tuple[int, float]] = field(default_factory=list)  # (pts, 48 kHz, arrival)
    motion: list[tuple[dict, float]] = field(default_factory=list)  # (message, arrival)
    partner_sent: list[tuple[float, float]] = field(default_factory=list)  # (pts s, handed to the sender)
    audio_sent: list[tuple[float, float]] = field(default_factory=list)
    server: dict = field(default_factory=dict)  # GET /v1/sessions/{id} at the end
    receive: dict = field(default_factory=dict)  # the client's receive counts (frames at marker, ...)
    stages: dict = field(default_factory=dict)  # stage -> [seconds, count] during the session (avatar)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def measured_from(self) -> float:
        return (self.connected_at or self.started_at)


# -- analysis (pure functions of records) ---------------------------------------------------------

def frame_index_offset(record: SegmentRecord) -> int | None:
    """Output frame index - received pts / 3600, from the motion message nearest in time to each frame."""
    if not record.motion or not record.video:
        return None
    arrivals = np.array([t for _, t in record.motion])
    indices = np.array([m["frame"] for m, _ in record.motion])
    order = np.argsort(arrivals)
    arrivals, indices = arrivals[order], indices[order]
    votes: Counter = Counter()
    for pts, t in record.video[:200]:
        j = int(np.searchsorted(arrivals, t))
        near = min((k for k in (j - 1, j) if 0 <= k < len(arrivals)), key=lambda k: abs(arrivals[k] - t))
        votes[int(indices[near]) - round(pts / FRAME_TICKS)] += 1
    return votes.most_common(1)[0][0]


def video_arrivals_by_index(record: SegmentRecord) -> dict[int, float]:
    offset = frame_index_offset(record)
    if offset is None:
        return {}
    return {offset + round(pts / FRAME_TICKS): t for pts, t in record.video}


def audio_to_photon_s(record: SegmentRecord, warmup_s: float) -> list[float]:
    arrival = video_arrivals_by_index(record)
    sent = {round(pts / AUDIO_PACKET_S): at for pts, at in record.audio_sent}
    start = record.measured_from + warmup_s
    out = []
    for message, _ in record.motion:
        pts, n = message["source"]["host_audio_pts"], message["frame"]
        if pts is None or n not in arrival or arrival[n] < start:
            continue
        packet = math.floor(pts / AUDIO_PACKET_S + 1e-6)  # the packet that holds this sample
        if packet in sent:
            out.append(arrival[n] - sent[packet])
    return out


def partner_to_photon_s(record: SegmentRecord, warmup_s: float) -> list[float]:
    arrival = video_arrivals_by_index(record)
    made = sorted((arrival[m["frame"]], m["source"]["partner_pts"]) for m, _ in record.motion
                  if m["source"]["partner_pts"] is not None and m["frame"] in arrival)
    if not made:
        return []
    arrivals = np.array([t for t, _ in made])
    newest = np.maximum.accumulate(np.array([p for _, p in made]))  # newest partner pts seen by then
    start = record.measured_from + warmup_s
    out = []
    for pts, at in record.partner_sent:
        if at < start:
            continue
        j = int(np.searchsorted(newest, pts - 0.0005))  # first output frame conditioned on it (or later)
        if j >= len(arrivals):
            break
        out.append(arrivals[j] - at)
    return out


def echo_round_trip_s(record: SegmentRecord, warmup_s: float) -> list[float]:
    sent = {round(pts * 25): at for pts, at in record.partner_sent}
    start = record.measured_from + warmup_s
    return [t - sent[round(pts / FRAME_TICKS)] for pts, t in record.video
            if t >= start and round(pts / FRAME_TICKS) in sent]


def av_offset_s(record: SegmentRecord, warmup_s: float) -> list[float]:
    """Returned audio packet 2n (the start of frame n's 40 ms) arrival - video frame n arrival."""
    audio = {round(pts / OPUS_FRAME_SAMPLES): t for pts, t in record.audio}
    start = record.measured_from + warmup_s
    return [audio[PACKETS_PER_FRAME * n] - t for n, t in video_arrivals_by_index(record).items()
            if t >= start and PACKETS_PER_FRAME * n in audio]


def steady_arrivals(record: SegmentRecord, warmup_s: float) -> np.ndarray:
    return np.array([t for _, t in record.video if t >= record.measured_from + warmup_s])


def first_frame_s(record: SegmentRecord) -> float | None:
    if not record.video or record.connected_at is None:
        return None
    return min(t for _, t in record.video) - record.connected_at


def fps_windows(arrivals: np.ndarray, window_s: float = 5.0) -> list[float]:
    if len(arrivals) < 2:
        return []
    edges = np.arange(arrivals[0], arrivals[-1] - window_s + 1e-9, window_s)
    return [float(np.sum((arrivals >= e) & (arrivals < e + window_s)) / window_s) for e in edges]


def summarise_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds) * 1000.0
    return {"n": int(ms.size), "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1), "p99": round(float(np.percentile(ms, 99)), 1),
            "mean": round(float(ms.mean()), 1), "min": round(float(ms.min()), 1), "max": round(float(ms.max()), 1)}


def summarise_variant(records: list[SegmentRecord], warmup_s: float) -> dict:
    """Every figure of one variant over all its sessions."""
    gaps, windows, frames, span = [], [], 0, 0.0
    for record in records:
        arrivals = steady_arrivals(record, warmup_s)
        if len(arrivals) >= 2:
            gaps += list(np.diff(arrivals))
            windows += fps_windows(arrivals)
            frames += len(arrivals) - 1
            span += float(arrivals[-1] - arrivals[0])
    first = [s for s in (first_frame_s(r) for r in records) if s is not None]
    target = records[0].target
    out = {
        "sessions": len(records),
        "early_delivery": records[0].early_delivery,
        "seconds_measured": round(span, 1),
        "fps": round(frames / span, 2) if span > 0 else 0.0,
        "fps_min_5s": round(min(windows), 2) if windows else None,
        "frame_gap_ms": summarise_ms(gaps),
        "first_frame_ms": summarise_ms(first) | {"per_session": [round(s * 1000, 1) for s in first]},
        "server_cpu_cores": round(sum(r.server_cpu_s for r in records) / max(span, 1e-9), 3),
        "client_cpu_cores": round(sum(r.client_cpu_s for r in records) / max(span, 1e-9), 3),
        "client_receive": _sum_dicts(r.receive for r in records),
    }
    if target == "echo":
        out["round_trip_ms"] = summarise_ms([x for r in records for x in echo_round_trip_s(r, warmup_s)])
        return out
    out["audio_to_photon_ms"] = summarise_ms([x for r in records for x in audio_to_photon_s(r, warmup_s)])
    out["partner_to_photon_ms"] = summarise_ms([x for r in records for x in partner_to_photon_s(r, warmup_s)])
    out["av_offset_ms"] = summarise_ms([x for r in records for x in av_offset_s(r, warmup_s)])
    stages: dict[str, list[float]] = {}
    for record in records:
        for stage, (seconds, count) in record.stages.items():
            total = stages.setdefault(stage, [0.0, 0.0])
            total[0] += seconds
            total[1] += count
    out["server_stages_ms"] = {stage: {"mean": round(1000 * s / c, 2), "count": int(c)}
                               for stage, (s, c) in stages.items() if c > 0}
    keys = ("frames_made", "frames_sent", "frames_skipped", "frames_skipped_late", "frames_skipped_engine",
            "frames_dropped_backlog", "partner_frames_received", "partner_frames_processed", "faces_seen",
            "host_audio_underrun_samples", "motion_messages_dropped")
    out["server"] = {k: sum(int(r.server.get(k) or 0) for r in records) for k in keys}
    out["server"]["step_ms_mean"] = _mean([r.server.get("step_ms_mean") for r in records])
    return out


def _sum_dicts(dicts) -> dict:
    total: Counter = Counter()
    for d in dicts:
        total.update({k: v for k, v in d.items() if isinstance(v, (int, float))})
    return dict(total)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 2) if values else None


def parse_stage_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """Prometheus text -> {stage: (seconds sum, count)} of `f2f_stage_seconds`."""
    sums, counts = {}, {}
    for match in re.finditer(r'^f2f_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$', metrics_text, re.M):
        (sums if match[1] == "sum" else counts)[match[2]] = float(match[3])
    return {stage: (sums.get(stage, 0.0), counts.get(stage, 0.0)) for stage in counts}


def compare(result: dict) -> dict:
    """Ratios to the floor, the gain of early delivery, and each target against its figure."""
    ours, floor = result.get("avatar"), result.get("echo")
    out: dict = {}
    if ours and floor and floor["round_trip_ms"].get("n"):
        rtt = floor["round_trip_ms"]["p50"]
        out["ratio_to_floor"] = {
            name: round(ours[name]["p50"] / rtt, 2) for name in ("audio_to_photon_ms", "partner_to_photon_ms")
            if ours[name].get("n")} | {"floor_round_trip_ms_p50": rtt}
        out["above_floor_ms"] = {name: round(ours[name]["p50"] - rtt, 1)
                                 for name in ("audio_to_photon_ms", "partner_to_photon_ms") if ours[name].get("n")}
    gain = {}
    for early, stock, names in (("echo", "echo-stock", ("round_trip_ms",)),
                                ("avatar", "avatar-stock", ("audio_to_photon_ms", "partner_to_photon_ms"))):
        if early in result and stock in result:
            for name in names:
                a, b = result[early][name], result[stock][name]
                if a.get("n") and b.get("n"):
                    gain[f"{early}.{name}"] = {q: round(b[q] - a[q], 1) for q in ("p50", "p95")}
    if gain:
        out["early_delivery_gain_ms"] = gain
    if ours:
        figures = {
            "fps": ours["fps"],
            "frame_gap_ms_p99": ours["frame_gap_ms"].get("p99"),
            "first_frame_ms_median": ours["first_frame_ms"].get("p50"),
            "av_offset_ms_median_abs": abs(ours["av_offset_ms"]["p50"]) if ours["av_offset_ms"].get("n") else None,
            "audio_to_photon_ms_p50": ours["audio_to_photon_ms"].get("p50"),
            "audio_to_photon_ms_p95": ours["audio_to_photon_ms"].get("p95"),
        }
        out["targets"] = {name: {"target": f"{op} {limit}", "value": figures[name],
                                 "met": None if figures[name] is None else
                                 (figures[name] >= limit if op == ">=" else figures[name] <= limit)}
                          for name, (op, limit) in TARGETS.items()}
    return out


# -- running ----------------------------------------------------------------------------------------

def gpu_availability() -> dict:
    """Whether the gateway can run the networks on CUDA here: {"available": bool, "reason" | "device"}."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"available": False, "reason": "onnxruntime is not installed"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"available": False, "reason": "this onnxruntime has no CUDAExecutionProvider (CPU build), "
                                              "so the gateway cannot put the networks on a GPU"}
    if shutil.which("nvidia-smi") is None:
        return {"available": False, "reason": "no NVIDIA driver (nvidia-smi) on this machine"}
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True)
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not names:
        return {"available": False, "reason": f"nvidia-smi sees no GPU: {done.stderr.strip()[:200]}"}
    return {"available": True, "device": names[0]}


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def run_segment(service: ServiceProcess, variant: str, seconds: float, voice: np.ndarray,
                      output_size: int) -> SegmentRecord:
    """One client session against `service` for `seconds` after it connected."""
    from clients.python.client import AvatarClient, ClientOptions, GatewayError
    from clients.python.media import SamplesAudioTrack, SyntheticFaceTrack

    target, early = VARIANTS[variant]
    record = SegmentRecord(variant=variant, target=target, early_delivery=early,
                           seconds=seconds)
    partner, host_audio = SyntheticFaceTrack(), SamplesAudioTrack(voice, loop=True)
    is_avatar = target != "echo"
    client = AvatarClient(
        service.url, partner=partner, host_audio=host_audio,
        options=ClientOptions(loopback=True, early_delivery=early, output_size=output_size if is_avatar else None),
        on_video=lambda frame, at: record.video.append((frame.pts, at)),
        on_audio=lambda frame, at: record.audio.append((frame.pts, at)),
        on_motion=lambda message, at: record.motion.append((message, at)))
    loop = asyncio.get_running_loop()
    before = await loop.run_in_executor(None, _get, service.url + "/metrics") if is_avatar else ""
    cpu = (service.cpu_seconds(), own_cpu_seconds())
    record.started_at = time.monotonic()
    try:
        await client.start()
        record.connected_at = client.stats.connected_at
        await asyncio.sleep(seconds)
        record.ended_at = time.monotonic()
        record.server_cpu_s = service.cpu_seconds() - cpu[0]
        record.client_cpu_s = own_cpu_seconds() - cpu[1]
        try:
            record.server = await client.server_stats()
        except GatewayError as error:
            record.server = {"error": error.message}
        record.receive = client.receive_counts()
    finally:
        await client.close()
    if is_avatar:
        after = parse_stage_totals(await loop.run_in_executor(None, _get, service.url + "/metrics"))
        start = parse_stage_totals(before)
        record.stages = {stage: [s - start.get(stage, (0.0, 0.0))[0], c - start.get(stage, (0.0, 0.0))[1]]
                         for stage, (s, c) in after.items()}
    record.partner_sent = list(partner.send_log)
    record.audio_sent = list(host_audio.send_log)
    return record


def _services(config: LatencyBenchConfig, variants: tuple[str, ...]) -> dict[tuple[str, bool], ServiceProcess]:
    services = {}
    log_dir = config.log_dir
    for variant in variants:
        target, early = VARIANTS[variant]
        key = (target, early)
        if key in services:
            continue
        log = (log_dir / f"{variant}.log") if log_dir else None
        if target == "echo":
            services[key] = echo_process(early_delivery=early, log_path=log)
        else:
            services[key] = gateway_process(config.model_repository, early_delivery=early, log_path=log,
                                            device="cuda" if target == "avatar-gpu" else "cpu")
    return services


async def _run_all(config: LatencyBenchConfig, variants: tuple[str, ...], services, voice, progress) -> list:
    records = []
    if config.warmup_session_s > 0:
        for variant in variants:  # first session of each server: lazy imports, first inference, encoder set-up
            target, early = VARIANTS[variant]
            await run_segment(services[(target, early)], variant, config.warmup_session_s, voice, config.output_size)
    for round_index in range(config.rounds):
        for variant in variants:
            target, early = VARIANTS[variant]
            record = await run_segment(services[(target, early)], variant, config.seconds / config.rounds, voice,
                                       config.output_size)
            records.append(record)
            progress(f"round {round_index + 1}/{config.rounds} {variant}: {len(record.video)} frames")
            await asyncio.sleep(0.5)  # let the server release the session
    return records


def run_latency_bench(config: LatencyBenchConfig, progress=print) -> dict:
    from clients.python.media import synthetic_voice

    variants = tuple(config.variants)
    gpu = gpu_availability()
    if "avatar-gpu" in variants and not gpu["available"]:
        variants = tuple(v for v in variants if v != "avatar-gpu")
    elif gpu["available"] and "avatar-gpu" not in variants and "avatar" in variants:
        variants = variants + ("avatar-gpu",)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    cpu_share = cpu_share_probe()
    limit_blas_threads()  # the clients run in this process: no spinning OpenBLAS worker
    voice = synthetic_voice()
    spec = spec_of(read_config(config.model_repository / AVATAR_STEP))
    services = _services(config, variants)
    started = time.monotonic()
    try:
        for service in services.values():
            service.start()
        records = asyncio.run(_run_all(config, variants, services, voice, progress))
    finally:
        for service in services.values():
            service.stop()
    result: dict = {
        "benchmark": "latency",
        "machine": machine_record(load_at_start, cpu_share),
        "config": config_record(config) | {"variants": list(variants)},
        "wall_seconds": round(time.monotonic() - started, 1),
        "avatar_spec": {"frames_per_step": spec.frames_per_step, "lookahead_frames": spec.lookahead_frames,
                        "frame_size": spec.frame_size, "lookahead_ms": lookahead_ms(spec.frames_per_step,
                                                                                    spec.lookahead_frames)},
    }
    for variant in variants:
        result[variant] = summarise_variant([r for r in records if r.variant == variant], config.warmup_s)
    result.update(compare(result))
    if "avatar-gpu" in result:
        result["gpu"] = {"available": True, "device": gpu["device"], **result.pop("avatar-gpu")}
    else:
        result["gpu"] = gpu
    result["cdf_ms"] = _cdf_samples(records, config.warmup_s)
    return result


CDF_POINTS = 201  # quantiles 0, 0.5, ..., 100 %


def _cdf_samples(records: list[SegmentRecord], warmup_s: float) -> dict:
    """Each latency's quantiles (ms) per variant, for the CDF plot (in the JSON, so it can be redrawn)."""
    series: dict = {}
    for record in records:
        entry = series.setdefault(record.variant, {})
        if record.target == "echo":
            values = {"round_trip_ms": echo_round_trip_s(record, warmup_s)}
        else:
            values = {"audio_to_photon_ms": audio_to_photon_s(record, warmup_s),
                      "partner_to_photon_ms": partner_to_photon_s(record, warmup_s)}
        for name, seconds in values.items():
            entry.setdefault(name, []).extend(seconds)
    return {variant: {name: cdf_quantiles_ms(seconds) for name, seconds in entry.items()}
            for variant, entry in series.items()}


def cdf_quantiles_ms(seconds: list[float]) -> list[float]:
    if not seconds:
        return []
    return [round(float(q), 1) for q in np.percentile(np.asarray(seconds) * 1000.0, np.linspace(0, 100, CDF_POINTS))]


# -- the plot ---------------------------------------------------------------------------------------

STACK_COLOURS = {"look-ahead (design)": "#bbbbbb", "audio_features": "#8dd3c7", "step other": "#ffffb3",
                 "motion": "#bebada", "render": "#fb8072", "send": "#80b1d3", "encode": "#fdb462",
                 "rest: waits, network, decode": "#b3de69", "receive": "#fccde5", "decode": "#d9d9d9",
                 "face": "#bc80bd", "guest_encoder": "#ccebc5", "round trip": "#ffed6f", "late start": "#e5c494"}


def lookahead_ms(spec_frames: int = 1, lookahead_frames: int = 2) -> float:
    """How far the newest audio a frame needs lies past the frame's first sample: (K + L) frames + 7.5 ms."""
    return (spec_frames + lookahead_frames) * 40.0 + 7.5


def plot_latency_bench(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    styles = {("avatar", "audio_to_photon_ms"): ("audio -> photon (ours)", "C0", "-"),
              ("avatar", "partner_to_photon_ms"): ("partner -> photon (ours)", "C1", "-"),
              ("avatar-stock", "audio_to_photon_ms"): ("audio -> photon (ours, aiortc hold)", "C0", ":"),
              ("avatar-stock", "partner_to_photon_ms"): ("partner -> photon (ours, aiortc hold)", "C1", ":"),
              ("echo", "round_trip_ms"): ("echo round trip (floor)", "k", "-"),
              ("echo-stock", "round_trip_ms"): ("echo round trip (floor, aiortc hold)", "k", ":")}
    for (variant, name), (label, colour, style) in styles.items():
        quantiles = result.get("cdf_ms", {}).get(variant, {}).get(name, [])
        if quantiles:
            cdf.plot(quantiles, np.linspace(0, 1, len(quantiles)), style, color=colour, label=label)
    cdf.axvline(150, color="grey", lw=0.8, ls="--")
    cdf.text(155, 0.92, "150 ms: audio p50 target", color="grey", fontsize=7)
    cdf.set(xscale="log", xlabel="latency (ms, log scale)", ylabel="fraction of frames",
            title="latency CDFs, ours and the floor", xlim=(5, None), ylim=(0, 1))
    cdf.set_xticks([10, 20, 50, 100, 200, 500, 1000, 2000], ["10", "20", "50", "100", "200", "500", "1000", "2000"])
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=7, loc="lower right")

    columns = []
    ours = result.get("avatar")
    if ours and ours.get("server_stages_ms"):
        stages = {k: v["mean"] for k, v in ours["server_stages_ms"].items()}
        columns.append(("partner path\n(server means)", [(s, stages.get(s, 0.0))
                                                         for s in ("receive", "decode", "face", "guest_encoder")]))
        a2p = ours["audio_to_photon_ms"].get("mean")  # means add up (stage means + the rest = the mean)
        if a2p:
            step_other = max(0.0, stages.get("step", 0.0) - stages.get("motion", 0.0) - stages.get("render", 0.0))
            design = result.get("avatar_spec", {}).get("lookahead_ms", lookahead_ms())
            parts = [("look-ahead (design)", design), ("late start", stages.get("late", 0.0)),
                     ("audio_features", stages.get("audio_features", 0.0)),
                     ("motion", stages.get("motion", 0.0)), ("render", stages.get("render", 0.0)),
                     ("step other", step_other), ("send", stages.get("send", 0.0)),
                     ("encode", stages.get("encode", 0.0))]
            parts.append(("rest: waits, network, decode", max(0.0, a2p - sum(v for _, v in parts))))
            columns.append(("audio -> photon mean\n(ours)", parts))
    floor = result.get("echo")
    if floor and floor["round_trip_ms"].get("n"):
        columns.append(("echo round trip mean\n(floor)", [("round trip", floor["round_trip_ms"]["mean"])]))
    seen = set()
    tallest = max((sum(v for _, v in parts) for _, parts in columns), default=1.0)
    for x, (label, parts) in enumerate(columns):
        bottom = 0.0
        for name, value in parts:
            bars.bar(x, value, bottom=bottom, color=STACK_COLOURS.get(name, "white"), edgecolor="k", lw=0.4,
                     label=None if name in seen else name)
            seen.add(name)
            bottom += value
        bars.text(x, bottom + 2, f"{bottom:.0f} ms", ha="center", fontsize=8)
    bars.set_xticks(range(len(columns)), [c[0] for c in columns], fontsize=8)
    bars.set(ylabel="ms", title="where the time goes (means per frame)", ylim=(0, tallest * 1.12))
    bars.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bars.grid(alpha=0.3, axis="y")
    machine = result["machine"]
    fig.suptitle(f"f2f bench latency: {machine['cpus']} CPU cores, loopback, "
                 f"{result['config']['seconds']:.0f} s per variant in {result['config']['rounds']} rounds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- model repository ----------------------------------------------------------------------------

def default_model_repository(checkpoint: Path | None, workdir: Path) -> tuple[Path, str]:
    """The repository to serve: build/model_repository when `make serve` exported the same default
    avatar there, else `checkpoint` (default avatars/default) exported into `workdir`."""
    from export.exporter import ExportOptions, export_checkpoint
    from export.model_repository import BatchingConfig
    from export.stamp import STAMP_FILE, export_stamp

    checkpoint = checkpoint or REPO_ROOT / "avatars" / "default"
    built = REPO_ROOT / "build" / "model_repository"
    stamp = built / STAMP_FILE
    if checkpoint.resolve() == (REPO_ROOT / "avatars" / "default").resolve() and stamp.is_file():
        if stamp.read_text().strip() == export_stamp(checkpoint):
            return built, f"{checkpoint} (exported by make serve to {built})"
    out = workdir / "model_repository"
    options = ExportOptions(batching=BatchingConfig(instance_kind="KIND_CPU"), int8_renderer=True, quiet=True)  # as serve
    if not export_checkpoint(checkpoint, out, options)["passed"]:
        raise RuntimeError(f"exporting {checkpoint} failed its parity check (see {out}/export_report.json)")
    return out, str(checkpoint)


def write_result(result: dict, json_path: Path, plot_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot_latency_bench(result, plot_path)


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="f2f-bench-latency-")
