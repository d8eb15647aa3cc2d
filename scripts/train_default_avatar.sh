#!/usr/bin/env bash
# Regenerates avatars/default: the interim bootstrap avatar (motion generator stage 1 on the host's
# espeak-ng voice + renderer on FacePainter frames of the host; no curation). ~20 minutes on 2 CPU
# cores. Generated data and training checkpoints are cached in build/bootstrap_cache/ (rerunning
# resumes; delete the folder to start from scratch). Also exports the avatar to a temporary model
# repository and times each network with onnxruntime at batch 1 for the model card.
#
#   scripts/train_default_avatar.sh [extra arguments of `python -m pipeline.train.bootstrap`]
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
[ -x "$python" ] || python=python3
latency_repo=$(mktemp -d -t f2f-default-repo-XXXXXX)
trap 'rm -rf "$latency_repo"' EXIT
mkdir -p build/bootstrap_cache

nice -n 10 "$python" -m pipeline.train.bootstrap \
    --out avatars/default \
    --cache build/bootstrap_cache \
    --grid build/bootstrap_cache/default_grid.png \
    --latency-repo "$latency_repo" \
    "$@" > build/bootstrap_cache/default_report.json
echo "avatars/default written; figures in avatars/default/model_card.md" >&2
