"""The inference contract and its backends (embedded onnxruntime, Triton). Never imports torch.

`open_engine(settings)` builds what the gateway uses: the configured backend, wrapped in the
failover policy when it is remote, behind one cross-session MicroBatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.contract import EngineTimeouts


@dataclass(frozen=True)
class EngineSettings:
    backend: str = "embedded"  # embedded | triton
    model_repository: Path | None = None  # embedded (and the triton fallback) read it
    device: str = "cpu"  # embedded: cpu | cuda | tensorrt
    intra_op_threads: int = 0
    triton_url: str = "127.0.0.1:8001"
    triton_shared_memory: bool = False
    on_backend_down: str = "failover"  # failover (to embedded) | end_session
    batch_window_s: float = 0.003
    max_batch: int = 64
    timeouts: EngineTimeouts = EngineTimeouts()


def open_engine(settings: EngineSettings):
    """-> an unstarted engine (await .start()); a MicroBatcher in front of the chosen backend."""
    from engines.batcher import MicroBatcher
    from engines.embedded import EmbeddedConfig, EmbeddedEngine
    from engines.failover import BackendDownPolicy, FailoverEngine

    def embedded() -> EmbeddedEngine:
        if settings.model_repository is None:
            raise ValueError("the embedded backend needs a model repository")
        config = EmbeddedConfig(device=settings.device, intra_op_threads=settings.intra_op_threads,
                                timeouts=settings.timeouts)
        return EmbeddedEngine(settings.model_repository, config)

    if settings.backend == "embedded":
        engine = embedded()
    elif settings.backend == "triton":
        from engines.triton import TritonEngine

        policy = BackendDownPolicy(settings.on_backend_down)
        primary = TritonEngine(settings.triton_url, timeouts=settings.timeouts,
                               use_shared_memory=settings.triton_shared_memory)
        fallback = embedded() if policy is BackendDownPolicy.FAILOVER else None
        engine = FailoverEngine(primary, fallback, policy)
    else:
        raise ValueError(f"backend must be embedded or triton, got {settings.backend!r}")
    return MicroBatcher(engine, window_s=settings.batch_window_s, max_batch=settings.max_batch)
