"""`f2f bench engines`: per-call latency and throughput of the engines against batch size.

Both backends serve the same exported avatar (the default avatar's architecture, 256x256 unless
told otherwise), measured in one run on this machine:
- embedded: onnxruntime in this process;
- triton: the Triton server bundled with nvidia-pytriton (Python-backend models wrapping
  onnxruntime, the production names, shapes and batching), over gRPC from `engines.triton`.
For each batch size (1, 4, 16, 64): the avatar step (motion generator + renderer, one request per
tick) and the guest encoder, median and p95 per call and items per second; then Triton's overhead
as the ratio of its median to embedded's at batch 1 and 16. When torch sees a CUDA GPU, the same
networks also run in torch on it (fp16, CUDA graphs) at 512x512, batch 1..64, and the sessions per
GPU at 25 fps that implies. Writes JSON and a plot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.contract import EngineTimeouts, PartnerFace, StepRequest
from f2f.avatar_spec import MOTION_GENERATOR, AvatarSpec
from f2f.timebase import VIDEO_FPS

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 4, 16, 64)
# A benchmark measures slow calls rather than abandoning them: batch 64 at 256x256 takes seconds on 2 cores.
ROUND_CALLS = 3  # calls per backend per turn
BENCH_TIMEOUTS = EngineTimeouts(encode_s=120.0, step_s=120.0, health_s=5.0, retries=0)


@dataclasses.dataclass(frozen=True)
class EngineBenchConfig:
    checkpoint: Path | None = None  # None: an untrained avatar of the default architecture
    batches: tuple[int, ...] = BATCHES
    min_calls: int = 10
    seconds_per_point: float = 2.0
    warmup_calls: int = 2
    triton: bool = True
    gpu: bool = True


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summarise(latencies_s: list[float], batch: int) -> dict:
    median = statistics.median(latencies_s)
    return {
        "batch": batch, "calls": len(latencies_s),
        "median_ms": round(1000 * median, 3), "p95_ms": round(1000 * percentile(latencies_s, 95), 3),
        "items_per_s": round(batch / median, 1),
    }


def step_requests(spec: AvatarSpec, batch: int, rng: np.random.Generator) -> list[StepRequest]:
    shapes = spec.inputs(MOTION_GENERATOR)
    return [StepRequest(
        audio_mel=rng.normal(size=shapes["audio_mel"]).astype(np.float32),
        guest_features=rng.normal(size=shapes["guest_features"]).astype(np.float32),
        guest_visible=np.ones(shapes["guest_visible"], np.float32),
        motion_history=np.zeros(shapes["motion_history"], np.float32),
        noise=rng.normal(size=shapes["noise"]).astype(np.float32),
        lambda_video=1.0,
    ) for _ in range(batch)]


def partner_faces(spec: AvatarSpec, batch: int, rng: np.random.Generator) -> list[PartnerFace]:
    return [PartnerFace(rng.random((3, spec.crop_size, spec.crop_size), dtype=np.float32),
                        np.zeros(spec.motion_dim, np.float32)) for _ in range(batch)]


async def _time_calls(call, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)
    return latencies


async def bench_backends(engines: dict, config: EngineBenchConfig, progress: tqdm) -> dict:
    """Per batch size and kind, the backends take turns in short rounds, so a load change on this
    shared machine hits both alike and the ratio between them stays fair."""
    rng = np.random.default_rng(0)
    spec = next(iter(engines.values())).spec
    rows: dict = {name: {"step": [], "encode": []} for name in engines}
    for batch in config.batches:
        requests = step_requests(spec, batch, rng)
        faces = partner_faces(spec, batch, rng)
        for kind in ("step", "encode"):
            calls = {name: (lambda e=engine: e.step(requests)) if kind == "step" else
                     (lambda e=engine: e.encode_partner(faces)) for name, engine in engines.items()}
            latencies: dict[str, list[float]] = {name: [] for name in engines}
            for call in calls.values():
                await _time_calls(call, config.warmup_calls)
            started = time.perf_counter()
            while (min(len(v) for v in latencies.values()) < config.min_calls
                   or time.perf_counter() - started < config.seconds_per_point * len(engines)):
                for name, call in calls.items():
                    latencies[name] += await _time_calls(call, ROUND_CALLS)
                if min(len(v) for v in latencies.values()) >= 10 * config.min_calls:
                    break
            for name in engines:
                rows[name][kind].append(summarise(latencies[name], batch))
            progress.update()
    return rows


def _ratio(triton_rows: list[dict], embedded_rows: list[dict], batch: int) -> float | None:
    t = next((r for r in triton_rows if r["batch"] == batch), None)
    e = next((r for r in embedded_rows if r["batch"] == batch), None)
    return round(t["median_ms"] / e["median_ms"], 3) if t and e else None


def export_for_bench(config: EngineBenchConfig, workdir: Path) -> tuple[Path, str]:
    from export.exporter import ExportOptions, export_avatar
    from export.model_repository import BatchingConfig
    from models.avatar import AvatarConfig, load_avatar, random_avatar

    if config.checkpoint is not None:
        avatar, source = load_avatar(config.checkpoint), str(config.checkpoint)
    else:
        avatar, source = random_avatar(AvatarConfig(name="untrained-default-architecture")), "untrained default architecture"
    repo = workdir / "model_repository"
    export_avatar(avatar, repo, ExportOptions(batching=BatchingConfig(instance_kind="KIND_CPU"), quiet=True), source)
    return repo, source


def run_engine_bench(config: EngineBenchConfig) -> dict:
    from engines.embedded import EmbeddedEngine

    result: dict = {
        "benchmark": "engines", "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                            "processor": platform.processor() or platform.machine()},
        "batches": list(config.batches),
    }
    with tempfile.TemporaryDirectory(prefix="f2f-bench-engines-") as tmp:
        workdir = Path(tmp)
        repo, source = export_for_bench(config, workdir)
        spec = EmbeddedEngine(repo).spec
        result["avatar"] = {"source": source, "spec": json.loads(spec.to_json())}
        with tqdm(total=2 * len(config.batches), desc="bench engines", unit="point") as progress:
            result.update(asyncio.run(_bench_all(repo, workdir, config, progress)))
    if "triton" in result:
        result["triton_overhead_ratio"] = {
            f"batch_{b}": _ratio(result["triton"]["step"], result["embedded"]["step"], b) for b in (1, 16)}
    result["gpu"] = run_gpu_bench(config) if config.gpu else {"available": False, "reason": "disabled"}
    return result


async def _bench_all(repo: Path, workdir: Path, config: EngineBenchConfig, progress: tqdm) -> dict:
    from engines.embedded import EmbeddedConfig, EmbeddedEngine

    threads = os.cpu_count() or 1  # both backends get the same onnxruntime threads: a fair ratio
    engines = {"embedded": EmbeddedEngine(repo, EmbeddedConfig(intra_op_threads=threads, timeouts=BENCH_TIMEOUTS))}
    server = None
    extra: dict = {"onnxruntime_threads": threads}
    if config.triton:
        from engines.triton import TritonEngine

        if str(REPO_ROOT) not in sys.path:  # the test Triton launcher lives in the checkout's tests/support
            sys.path.insert(0, str(REPO_ROOT))
        from tests.support.triton_process import TritonServer

        server = TritonServer(model_repository=repo, workdir=workdir / "triton", ort_threads=threads)
        server.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(server.start)
        extra["triton_server_start_s"] = round(server.start_seconds[-1], 2)
        engines["triton"] = TritonEngine(server.grpc_url, timeouts=BENCH_TIMEOUTS, access_token=server.access_token)
    try:
        for engine in engines.values():
            await engine.start()
        rows = await bench_backends(engines, config, progress)
    finally:
        for engine in engines.values():
            await engine.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
    return {**rows, **extra}


def run_gpu_bench(config: EngineBenchConfig, frame_size: int = 512) -> dict:
    """torch on CUDA, fp16, CUDA graphs: the avatar step (motion generator + renderer)."""
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "no CUDA GPU visible to torch on this machine"}
    from export.onnx_export import example_inputs
    from models.avatar import AvatarConfig, load_avatar, random_avatar

    avatar = load_avatar(config.checkpoint) if config.checkpoint else random_avatar(AvatarConfig())
    avatar_config = dataclasses.replace(avatar.config, spec=dataclasses.replace(avatar.spec, frame_size=frame_size))
    avatar = random_avatar(avatar_config).cuda().half().eval()
    rows = []
    for batch in config.batches:
        inputs = {k: v.cuda().half() for k, v in example_inputs(avatar.spec, MOTION_GENERATOR, batch).items()}

        def step():
            return avatar.renderer(avatar.motion_generator(**inputs))

        with torch.no_grad():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            latencies = []
            for _ in range(50):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                latencies.append(start.elapsed_time(end) / 1000.0)
        rows.append(summarise(latencies, batch))
    best = max(rows, key=lambda r: r["items_per_s"])
    return {"available": True, "device": torch.cuda.get_device_name(0), "frame_size": frame_size,
            "dtype": "float16", "cuda_graphs": True, "step": rows,
            "sessions_per_gpu_at_25fps": int(best["items_per_s"] // VIDEO_FPS),
            "note": "motion generator + renderer only; video encode stays on CPU (no NVENC on H100/H200)"}


def plot_engine_bench(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend, style in (("embedded", "-o"), ("triton", "--s")):
        if backend not in result:
            continue
        for kind in ("step", "encode"):
            rows = result[backend][kind]
            batches = [r["batch"] for r in rows]
            axes[0].plot(batches, [r["median_ms"] for r in rows], style, label=f"{backend} {kind} (median)")
            axes[1].plot(batches, [r["items_per_s"] for r in rows], style, label=f"{backend} {kind}")
    if result.get("gpu", {}).get("available"):
        rows = result["gpu"]["step"]
        axes[1].plot([r["batch"] for r in rows], [r["items_per_s"] for r in rows], ":^", label="torch CUDA fp16 step")
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency per call (ms)",
                title="per-call latency")
    axes[1].set(xscale="log", yscale="log", xlabel="batch size", ylabel="items per second",
                title="throughput")
    axes[1].axhline(VIDEO_FPS, color="grey", lw=0.8, ls=":")
    axes[1].text(1, VIDEO_FPS * 1.1, "one session at 25 fps", color="grey", fontsize=8)
    for ax in axes:
        ax.set_xticks(result["batches"], [str(b) for b in result["batches"]])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"f2f engines on {result['machine']['cpus']} CPU cores ({result['avatar']['source']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
