#!/usr/bin/env bash
# Entry point of the f2f production image. One argument picks the role:
#   triton   build TensorRT plans for this GPU (cached in the /models volume), then run tritonserver
#   gateway  run the f2f gateway against Triton (F2F_TRITON_URL), embedded CPU fallback from /models/onnx
#   all      both in this one container (tritonserver in the background, the gateway in front)
#   anything else is run as a command (e.g. `bash`).
# Volume layout (shared by the compose services):
#   /models/onnx     the ONNX repository baked into the image (`f2f export` at build time)
#   /models/triton   what tritonserver serves: TensorRT plans (or the ONNX models with F2F_PLANS=onnx)
set -euo pipefail

ONNX_SRC=/opt/f2f/model_repository          # baked into the image by the builder stage
MODELS=${F2F_MODELS_DIR:-/models}
PLANS=${F2F_PLANS:-auto}                     # auto | tensorrt | onnx
FP16=${F2F_FP16:-1}
TRITON_URL=${F2F_TRITON_URL:-127.0.0.1:8001}
PORT=${F2F_PORT:-8080}

log() { printf '[f2f-entrypoint] %s\n' "$*" >&2; }

prepare_models() {
    mkdir -p "$MODELS"
    # The gateway's embedded fallback reads the same ONNX models the plans are built from.
    rm -rf "$MODELS/onnx.partial" && cp -r "$ONNX_SRC" "$MODELS/onnx.partial"
    rm -rf "$MODELS/onnx" && mv "$MODELS/onnx.partial" "$MODELS/onnx"
    local fp16=--fp16
    [ "$FP16" = 1 ] || fp16=--no-fp16
    log "building the served repository ($PLANS) in $MODELS/triton; a first start on a new GPU takes minutes"
    python /opt/f2f/docker/build_plans.py --onnx-repository "$ONNX_SRC" --out "$MODELS/triton" --mode "$PLANS" "$fp16"
}

run_triton() {
    # Explicit ports; the gateway (or a client) reaches gRPC on 8001. Extra flags via F2F_TRITON_ARGS.
    # shellcheck disable=SC2086
    exec tritonserver --model-repository="$MODELS/triton" --http-port=8000 --grpc-port=8001 --metrics-port=8002 \
        ${F2F_TRITON_ARGS:-} "$@"
}

run_gateway() {
    exec f2f serve --backend triton --triton-url "$TRITON_URL" --host 0.0.0.0 --port "$PORT" \
        --model-repository "$MODELS/onnx" "$@"
}

role=${1:-all}
[ $# -gt 0 ] && shift
case "$role" in
    triton)
        prepare_models
        run_triton "$@"
        ;;
    gateway)
        for _ in $(seq 1 600); do [ -f "$MODELS/onnx/avatar_step/config.pbtxt" ] && break; sleep 1; done
        run_gateway "$@"
        ;;
    all)
        prepare_models
        # shellcheck disable=SC2086
        tritonserver --model-repository="$MODELS/triton" --http-port=8000 --grpc-port=8001 --metrics-port=8002 \
            ${F2F_TRITON_ARGS:-} &
        triton_pid=$!
        # The gateway fails over to the embedded engine while Triton is starting or down, and moves
        # back once it is up.
        f2f serve --backend triton --triton-url 127.0.0.1:8001 --host 0.0.0.0 --port "$PORT" \
            --model-repository "$MODELS/onnx" "$@" &
        gateway_pid=$!
        trap 'kill -TERM "$gateway_pid" "$triton_pid" 2>/dev/null' TERM INT
        status=0
        wait -n "$triton_pid" "$gateway_pid" || status=$?  # either one ending ends the container
        log "stopping (first exit status $status)"
        kill -TERM "$gateway_pid" "$triton_pid" 2>/dev/null || true
        wait || true
        exit "$status"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
