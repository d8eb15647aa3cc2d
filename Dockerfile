# Production GPU image: Triton Inference Server (TensorRT plans) + the f2f gateway, no torch.
# Build: docker build -t f2f .   (not buildable on the project's CI machines: they run no Docker engine)
# The model repository is produced by `f2f export` (issue 5) and mounted at /models; the gateway
# (`f2f serve`, issue 6) talks to Triton over gRPC on localhost.
FROM nvcr.io/nvidia/tritonserver:24.08-py3

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libespeak-ng1 ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/f2f
COPY pyproject.toml README.md ./
COPY f2f ./f2f
COPY server ./server
COPY engines ./engines
COPY clients ./clients
COPY pipeline ./pipeline
COPY export ./export
COPY models ./models
COPY benchmarks ./benchmarks
# The serving path: the core package without torch; mediapipe without its unused jax dependency.
RUN python3 -m pip install "numpy==1.26.4" "protobuf==4.25.9" \
 && python3 -m pip install --no-deps "mediapipe==0.10.21" \
 && python3 -m pip install .

EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models"]
