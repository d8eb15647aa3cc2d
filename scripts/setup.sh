#!/usr/bin/env bash
# Installs everything f2f needs on a fresh Debian machine into .venv/ at the repo root.
# Idempotent: a rerun with an unchanged pyproject.toml and setup script only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------------
# espeak-ng (speech + phoneme timings through libespeak-ng), ffmpeg/ffprobe (codecs), sox (music),
# chromium (the e2e tests drive Debian's browser through Playwright; Playwright's own browser
# download is never used).
apt_packages=(espeak-ng libespeak-ng1 ffmpeg sox chromium)
missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q 'libespeak-ng.so.1 ' || missing+=(libespeak-ng1)
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
command -v sox >/dev/null || missing+=(sox)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
    log "installing system packages: ${missing[*]}"
    sudo_cmd=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { log "need root or sudo to apt-get install ${missing[*]}"; exit 1; }
        sudo_cmd=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# --- python environment ----------------------------------------------------------------------
python_bin=${F2F_PYTHON:-}
if [ -z "$python_bin" ]; then
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null; then python_bin=$candidate; break; fi
    done
fi
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($python_bin --version)"
    "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

stamp=.venv/.f2f-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "python environment up to date"
    exit 0
fi

log "installing python packages into .venv (a first run takes a few minutes)"
started=$SECONDS
"${pip[@]}" install --upgrade "pip>=24" "setuptools>=68,<81" wheel
# Pins that mediapipe, pytriton and the Triton client need, first, so nothing later pulls numpy 2.
"${pip[@]}" install "numpy==1.26.4" "protobuf==4.25.9"
# torch before anything that depends on it, explicitly and alone, so no resolver ever picks a CUDA
# build (gigabytes of nvidia-* wheels that cannot run here). The CPU wheel comes from the local
# wheel folder when the machine has one, else from PyPI, whose 2.13.0 wheel is the CPU build here.
torch_src=()
[ -d /opt/wheels ] && torch_src=(--find-links /opt/wheels)
"${pip[@]}" install "${torch_src[@]}" "torch==2.13.0"
.venv/bin/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch was installed: ' + torch.__version__"
# mediapipe 0.10.21 is the last release whose legacy `mp.solutions` ships its models; installed
# without its jax dependency (unused here, and it would drag numpy 2 in).
"${pip[@]}" install --no-deps "mediapipe==0.10.21"
# The whole stack in one environment: serving path, training/export, pipeline, tests.
"${pip[@]}" install "${torch_src[@]}" -e ".[serve,train,pipeline,dev]"
# The perception models whose weights ship inside their packages (see pyproject's `pipeline` extra):
# silero-vad (ONNX, run by onnxruntime) and resemblyzer, without their torchaudio/typing dependencies.
"${pip[@]}" install --no-deps "silero-vad==6.2.3" "resemblyzer==0.1.4"
# Everything imports together, with the pins intact, and nothing replaced torch by a CUDA build.
.venv/bin/python - <<'PY'
import numpy, google.protobuf, cv2, mediapipe, torch, onnx, onnxruntime, tritonclient.grpc.aio, pytriton, aiortc, av
import dlib, face_recognition_models, silero_vad, resemblyzer
assert numpy.__version__ == "1.26.4", numpy.__version__
assert google.protobuf.__version__ == "4.25.9", google.protobuf.__version__
assert torch.version.cuda is None, torch.__version__
mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=True).close()
PY
echo "$want" >"$stamp"
log "done in $((SECONDS - started)) s: .venv/bin/f2f is ready"
