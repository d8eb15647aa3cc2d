# syntax=docker/dockerfile:1.7
# f2f production image: Triton Inference Server serving TensorRT plans + the f2f gateway. No torch.
#
#   docker build -t f2f --build-context checkpoint=PATH/TO/CHECKPOINT .   # your avatar (config.json + model.safetensors)
#   docker build -t f2f .                    # without one: an UNTRAINED random avatar, for smoke tests only
#   docker compose up                        # triton + gateway services, see docker-compose.yml
#   docker run --gpus 1 -p 8080:8080 -v f2f-models:/models f2f all     # both in one container
#
# Stages: `builder` (python + torch CPU) exports the checkpoint to ONNX with `f2f export`; `runtime`
# (the NGC Triton image, which ships trtexec) builds TensorRT plans AT CONTAINER START, because a
# plan only runs on the GPU model and TensorRT version that built it (docker/build_plans.py caches
# them in the /models volume). Not built on CI (no Docker engine there); tests/unit/test_deployment_files.py
# checks this file's shape.

# Triton 25.02 = Ubuntu 24.04 with Python 3.12 (f2f needs >= 3.11; 24.xx images have 3.10).
# It needs an NVIDIA driver recent enough for CUDA 12.8 (see NVIDIA's frameworks support matrix).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.02-py3

# ---- builder: the torch side (export), CPU only ---------------------------------------------------
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# libGL/glib: opencv (a core dependency) loads them at import.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/f2f
# The pins first (nothing may pull numpy 2), then torch alone from PyTorch's CPU index: a plain
# `pip install torch` on x86-64 Linux would bring gigabytes of CUDA wheels this stage never uses.
RUN pip install "numpy==1.26.4" "protobuf==4.25.9" \
 && pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && python -c "import torch; assert torch.version.cuda is None, torch.__version__"
COPY pyproject.toml README.md ./
COPY f2f ./f2f
COPY server ./server
COPY engines ./engines
COPY clients ./clients
COPY pipeline ./pipeline
COPY export ./export
COPY models ./models
COPY benchmarks ./benchmarks
RUN pip install ".[train]"

# ---- checkpoint: replaced by `--build-context checkpoint=DIR`; else an untrained avatar ---------
FROM builder AS untrained-avatar
RUN f2f init-avatar --out /checkpoint --seed 0

FROM scratch AS checkpoint
COPY --from=untrained-avatar /checkpoint/ /

# ---- export: checkpoint -> ONNX model repository (parity-checked against torch) ---------------
FROM builder AS export
COPY --from=checkpoint / /opt/f2f/checkpoint/
RUN f2f export /opt/f2f/checkpoint --out /opt/f2f/model_repository --instance-kind gpu --quiet

# ---- runtime: Triton + the gateway, no torch ------------------------------------------------------
FROM ${TRITON_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/f2f/venv PATH=/opt/f2f/venv/bin:$PATH \
    F2F_WEB_ROOT=/opt/f2f/clients/web
# espeak-ng: server-side speech for demo conversations; ffmpeg: codecs; libGL/glib: opencv.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv espeak-ng libespeak-ng1 ffmpeg libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/f2f
# A venv of its own (Ubuntu 24.04's system Python refuses pip installs). mediapipe without its
# jax dependency, which is unused and would pull numpy 2.
RUN python3 -m venv "$VIRTUAL_ENV" \
 && pip install "numpy==1.26.4" "protobuf==4.25.9" \
 && pip install --no-deps "mediapipe==0.10.21"
COPY pyproject.toml README.md ./
COPY f2f ./f2f
COPY server ./server
COPY engines ./engines
COPY clients ./clients
RUN pip install ".[serve]" \
 && python -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch in the serving image'"
COPY --from=export /opt/f2f/model_repository ./model_repository
COPY docker ./docker

# 8000/8001/8002: Triton HTTP/gRPC/metrics; 8080: the gateway (signalling, /healthz, /readyz, /metrics).
EXPOSE 8000 8001 8002 8080
VOLUME /models
ENTRYPOINT ["/opt/f2f/docker/entrypoint.sh"]
CMD ["all"]
