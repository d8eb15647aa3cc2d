"""A real Triton server for tests: the model repository's networks served by pytriton's bundled Triton.

    python -m tests.support.pytriton_server --model-repository DIR --grpc-port P --http-port Q --metrics-port R

Production runs the NGC `tritonserver` image over TensorRT plans. Tests cannot (no GPU, no Docker), so
this script reads the same model repository (every `*/config.pbtxt`) and binds, for each model, a
pytriton Python model with the SAME name, input/output names, dims, dtypes, max_batch_size and
dynamic-batching settings, whose inference function runs onnxruntime on that model's
`1/model.onnx`. An `ensemble` (the `avatar_step` motion_generator -> renderer) becomes one Python
model with the ensemble's inputs/outputs that runs its steps' onnxruntime sessions in order. Each
model's `parameters` (the `f2f_avatar_spec`) are carried over, so `get_model_config` answers as the
production server does. Clients speak the same KServe v2 gRPC protocol to both.

Environment fixes it applies to itself (see shared ARCHITECTURE "Environment facts"): the bundled
tritonserver and its Python-backend stub must load *this* Python's libpython (LD_LIBRARY_PATH =
sysconfig LIBDIR) and find this venv's python first on PATH. Shared-memory endpoints need the access
token (`F2F_TRITON_ACCESS_TOKEN` or `--access-token=TOKEN`, else pytriton makes one up and clients cannot register regions).
SIGTERM stops it cleanly; SIGKILL of its process group is how tests simulate a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

LOG = logging.getLogger("pytriton_server")

ONNX_PLATFORMS = ("onnxruntime_onnx",)
ONNX_BACKENDS = ("onnxruntime",)


def _fix_environment() -> None:
    """Make the bundled server load this interpreter's libpython and this venv's python."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in parts:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *parts])
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(":")
    if not path or path[0] != bindir:
        os.environ["PATH"] = ":".join([bindir, *[p for p in path if p != bindir]])


def _numpy_dtype(data_type: int) -> type:
    from tritonclient.grpc import model_config_pb2 as mc

    table = {
        mc.TYPE_FP32: np.float32, mc.TYPE_FP16: np.float16, mc.TYPE_FP64: np.float64,
        mc.TYPE_INT64: np.int64, mc.TYPE_INT32: np.int32, mc.TYPE_INT8: np.int8, mc.TYPE_UINT8: np.uint8,
        mc.TYPE_BOOL: np.bool_, mc.TYPE_STRING: np.bytes_,
    }
    if data_type not in table:
        raise ValueError(f"unsupported Triton data type {mc.DataType.Name(data_type)}")
    return table[data_type]


def read_repository(model_repository: Path) -> dict[str, "object"]:
    """name -> parsed ModelConfig for every model directory with a config.pbtxt."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    configs = {}
    for path in sorted(model_repository.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        name = config.name or path.parent.name
        if name != path.parent.name:
            raise ValueError(f"{path}: model name {name!r} != its directory {path.parent.name!r}")
        configs[name] = config
    if not configs:
        raise FileNotFoundError(f"no */config.pbtxt under {model_repository}")
    return configs


def _is_onnx(config) -> bool:
    return config.platform in ONNX_PLATFORMS or config.backend in ONNX_BACKENDS


def _onnx_session(model_repository: Path, config, threads: int):
    import onnxruntime as ort

    from engines.repository import model_file

    path = model_file(model_repository, config.name)  # latest version, default_model_filename
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # tests share 2 cores with the client and the embedded engine
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class Binding:
    """What one pytriton `bind` call needs."""

    name: str
    infer: Callable
    inputs: list
    outputs: list
    config: object  # pytriton ModelConfig
    parameters: dict[str, str]  # config.pbtxt `parameters`, carried over to the served config


def _session_runner(session, output_names: list[str]) -> Callable[..., dict[str, np.ndarray]]:
    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(output_names, inputs)
        return dict(zip(output_names, values))

    return run


def _ensemble_runner(config, sessions: dict) -> Callable[..., dict[str, np.ndarray]]:
    """Run the ensemble's steps in dependency order on in-process onnxruntime sessions."""
    steps = list(config.ensemble_scheduling.step)
    output_names = [o.name for o in config.output]
    for step in steps:
        if step.model_name not in sessions:
            raise ValueError(f"ensemble {config.name}: step model {step.model_name!r} is not an ONNX model here")

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        tensors = dict(inputs)
        pending = list(steps)
        while pending:
            ready = [s for s in pending if all(v in tensors for v in s.input_map.values())]
            if not ready:
                raise RuntimeError(f"ensemble {config.name}: steps {[s.model_name for s in pending]} cannot run")
            for step in ready:
                session = sessions[step.model_name]
                feed = {model_input: tensors[ensemble_name] for model_input, ensemble_name in step.input_map.items()}
                model_outputs = list(step.output_map.keys())
                for model_output, value in zip(model_outputs, session.run(model_outputs, feed)):
                    tensors[step.output_map[model_output]] = value
                pending.remove(step)
        return {name: tensors[name] for name in output_names}

    return run


def build_bindings(model_repository: Path, threads: int = 1) -> list[Binding]:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    configs = read_repository(model_repository)
    sessions = {name: _onnx_session(model_repository, c, threads) for name, c in configs.items() if _is_onnx(c)}
    bindings = []
    for name, config in configs.items():
        if _is_onnx(config):
            run = _session_runner(sessions[name], [o.name for o in config.output])
        elif config.platform == "ensemble":
            run = _ensemble_runner(config, sessions)
        else:
            raise ValueError(f"{name}: platform {config.platform!r} / backend {config.backend!r} is not served here")
        batcher = DynamicBatcher()
        if config.HasField("dynamic_batching"):
            batcher = DynamicBatcher(
                max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds,
                preferred_batch_size=list(config.dynamic_batching.preferred_batch_size) or None,
            )
        # pytriton's python models always batch; a config without a batch axis cannot be mirrored.
        if config.max_batch_size < 1:
            raise ValueError(f"{name}: max_batch_size must be >= 1 to be served by pytriton")
        bindings.append(Binding(
            name=name,
            infer=batch(run),
            inputs=[Tensor(name=i.name, dtype=_numpy_dtype(i.data_type), shape=tuple(i.dims)) for i in config.input],
            outputs=[Tensor(name=o.name, dtype=_numpy_dtype(o.data_type), shape=tuple(o.dims)) for o in config.output],
            config=ModelConfig(max_batch_size=config.max_batch_size, batcher=batcher),
            parameters={k: v.string_value for k, v in config.parameters.items()},
        ))
    return bindings


def _carry_parameters(triton, name: str, parameters: dict[str, str]) -> None:
    """Put config.pbtxt `parameters` into the served config. pytriton has no public hook for this:
    its generated config writes `backend_parameters` as `parameters`, so add ours there before the
    server loads the model (private attribute; checked by the integration tests)."""
    for model in triton._model_manager.models:
        if model.model_name == name:
            model._get_triton_model_config().backend_parameters.update(parameters)
            return
    raise RuntimeError(f"model {name} was not bound")


def serve(args: argparse.Namespace) -> int:
    _fix_environment()
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    started = time.monotonic()
    bindings = build_bindings(args.model_repository, threads=args.ort_threads)
    config = TritonConfig(
        grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
        grpc_address=args.host, http_address=args.host, metrics_address=args.host,
        exit_timeout_secs=2, log_verbose=args.log_verbose,
    )
    security = TritonSecurityConfig(access_token=args.access_token)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    triton = Triton(config=config, security_config=security, workspace=args.workspace)
    try:
        for b in bindings:
            triton.bind(model_name=b.name, infer_func=b.infer, inputs=b.inputs, outputs=b.outputs, config=b.config)
            _carry_parameters(triton, b.name, b.parameters)
        triton.run()  # starts tritonserver and waits until every model is loaded
        print(f"pytriton_server ready: grpc {args.host}:{args.grpc_port} models {[b.name for b in bindings]} "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        while not stop.is_set() and triton.is_alive():
            stop.wait(0.5)
    finally:
        triton.stop()
    return 0 if stop.is_set() else 1


def parse_arguments(argv: list[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--host", default="127.0.0.1", help="address every endpoint binds to")
    parser.add_argument("--access-token", default=None,
                        help="token for the protected endpoints (shared memory, ...); default: F2F_TRITON_ACCESS_TOKEN. "
                             "Write --access-token=TOKEN when TOKEN may begin with '-'")
    parser.add_argument("--ort-threads", type=int, default=1, help="onnxruntime intra-op threads per model")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--workspace", type=Path, default=None,
                        help="pytriton's workspace (a copy of the server, sockets); default: a new temporary one")
    args = parser.parse_args(argv)
    args.access_token = args.access_token or environ.get("F2F_TRITON_ACCESS_TOKEN")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv, os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
