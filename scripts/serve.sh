#!/usr/bin/env bash
# The serve command: set everything up, export the shipped default avatar to a model repository
# (once, and again whenever the checkpoint changes), then run the gateway on http://127.0.0.1:8080
# with the embedded onnxruntime backend. Extra arguments go to `f2f serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

avatar=${F2F_AVATAR:-avatars/default}
repo=${F2F_MODEL_REPOSITORY:-build/model_repository}
stamp="$repo/.exported-from"
# CPU serving: Triton CPU instances if served by Triton; the int8 renderer (checked against the float one).
flags=(--instance-kind cpu --int8-renderer)  # = export/stamp.py SERVE_EXPORT_FLAGS
want=$(.venv/bin/python -m export.stamp "$avatar" "${flags[@]}")  # checkpoint + exporting code + flags
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[serve] exporting $avatar to $repo" >&2
    rm -rf "$repo.partial"
    .venv/bin/f2f export "$avatar" --out "$repo.partial" "${flags[@]}" --quiet >&2
    rm -rf "$repo"
    mv "$repo.partial" "$repo"
    echo "$want" >"$stamp"
fi
exec .venv/bin/f2f serve --host 127.0.0.1 --port 8080 --model-repository "$repo" "$@"
