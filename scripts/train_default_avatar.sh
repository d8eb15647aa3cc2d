#!/usr/bin/env bash
# Trains avatars/default from scratch in one command:
#   f2f synth (talk-show episodes) -> f2f curate -> f2f train -> f2f evaluate -> avatars/default
# Resumable: synth skips finished episodes, curation keeps its per-episode state, training resumes every
# stage from its last checkpoint and caches the prepared clips, so rerunning after an interruption
# continues where it stopped. Everything generated lives under $WORK (default build/default_avatar).
#
#   scripts/train_default_avatar.sh
#
# Settings (environment): WORK, EPISODES (12), MINUTES (2 per episode), SEED (21), STYLE (interview: one
# guest, mostly two-shots, see pipeline/synth/style.py), WORKERS (2), AVATAR_DIR (avatars/default).
# The model card records the wall time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${WORK:-build/default_avatar}
episodes=${EPISODES:-12}
minutes=${MINUTES:-2}
seed=${SEED:-21}
style=${STYLE:-interview}
workers=${WORKERS:-2}
avatar_dir=${AVATAR_DIR:-avatars/default}
python=.venv/bin/python
f2f=(nice -n 10 .venv/bin/f2f)
# On busy cores idle OpenMP threads sleep instead of spinning (10x faster steps on a shared machine).
export OMP_WAIT_POLICY=PASSIVE
export GLOG_minloglevel=2  # mediapipe's per-graph log lines
mkdir -p "$work"
timings="$work/timings.json"
[ -f "$timings" ] || echo '{}' > "$timings"

step() {  # step NAME COMMAND...: run it, add its wall time to $timings (resumed steps add up)
    local name=$1 started=$SECONDS
    shift
    echo "== $name: $*" >&2
    "$@"
    "$python" - "$timings" "$name" $((SECONDS - started)) <<'EOF'
import json, sys
path, name, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = json.load(open(path))
data[name] = data.get(name, 0) + seconds
json.dump(data, open(path, "w"))
EOF
}

train_stages() {  # f2f train, its stages spread over two processes (one torch thread each)
    local train=("${f2f[@]}" train "$work/curated" --run-dir "$work/run" --workers "$workers" --quiet)
    local parts="$work/parts"  # each call writes an avatar; only the last one's is kept
    # The clip cache and the guest stage first (everything else reads both).
    "${train[@]}" --out "$parts/guest" --stages guest --stage2-candidates 1
    # With sleeping OpenMP workers one process gains nothing from a second thread (stage 1: 4.5 steps/s
    # at one thread or two), so two processes keep both cores busy: the renderer (it needs nothing of
    # the motion stages) beside stage 1, then the two stage-2 candidates side by side.
    "${train[@]}" --out "$parts/renderer" --stages renderer --stage2-candidates 1 --threads 1 &
    local renderer=$!
    "${train[@]}" --out "$parts/stage1" --stages stage1 --stage2-candidates 1 --threads 1 \
        || { wait "$renderer"; return 1; }
    "${train[@]}" --out "$parts/stage2_second" --stages stage2 --stage2-candidate 1 --threads 1 &
    local second=$!
    local failed=0
    "${train[@]}" --out "$parts/stage2_first" --stages stage2 --stage2-candidate 0 --threads 1 || failed=1
    wait "$second" || failed=1
    wait "$renderer" || failed=1
    [ "$failed" = 0 ] || return 1
    # Every stage resumes from its finished checkpoint: this call selects stage 2 and writes the avatar.
    "${train[@]}" --out "$work/avatar"
}

step synth "${f2f[@]}" synth --out "$work/raw" --episodes "$episodes" --minutes "$minutes" --seed "$seed" --style "$style" \
    --workers "$workers" --quiet
if [ ! -f "$work/curated/report.json" ]; then
    step curate "${f2f[@]}" curate "$work/raw" "$work/curated" --workers "$workers" --labels-from-ground-truth
fi
step train train_stages
step evaluate "${f2f[@]}" evaluate "$work/avatar" --out "$work/eval" --cache "$work/run/cache" --workers "$workers" --quiet

# Install: the checkpoint, its reports, the plots, and a model card written from them.
mkdir -p "$avatar_dir/eval"
cp "$work/avatar/config.json" "$work/avatar/model.safetensors" "$work/avatar/train_report.json" "$avatar_dir/"
cp "$work/eval/eval.json" "$avatar_dir/eval.json"
cp "$work/eval/"*.png "$avatar_dir/eval/"
rm -f "$avatar_dir/bootstrap_report.json"
cat > "$work/commands.txt" <<EOF
scripts/train_default_avatar.sh   # WORK=$work EPISODES=$episodes MINUTES=$minutes SEED=$seed STYLE=$style WORKERS=$workers
# = f2f synth --out $work/raw --episodes $episodes --minutes $minutes --seed $seed --style $style --workers $workers
#   f2f curate $work/raw $work/curated --workers $workers --labels-from-ground-truth
#   f2f train $work/curated --out $work/avatar --run-dir $work/run --workers $workers
#     (run as: --stages guest; --stages renderer beside --stages stage1; the two stage-2 candidates side by
#      side (--stage2-candidate 0 / 1); then every stage resumed, which selects stage 2 and writes the avatar)
#   f2f evaluate $work/avatar --out $work/eval --cache $work/run/cache --workers $workers
EOF
"$python" -m pipeline.evaluate.model_card "$avatar_dir" --timings "$timings" --commands "$work/commands.txt"
echo "avatar written to $avatar_dir (figures in $avatar_dir/model_card.md)" >&2
