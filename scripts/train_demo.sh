#!/usr/bin/env bash
# Rebuild the bundled demo model (src/captioner/demo/) from nothing, offline:
# generate shape scenes, train with `captioner train`, score on 500 scenes of a seed
# training never saw, and install the checkpoint and vocabulary into the package.
#
# Usage: scripts/train_demo.sh [WORK_DIR]      (default: a fresh temporary folder)
# Run from the repository root with the package installed (pip install -e .).
set -euo pipefail

work="${1:-$(mktemp -d)}"
demo_dir="src/captioner/demo"
train_seed=1
eval_seed=999

started=$(date +%s)
python scripts/make_shapes_dataset.py --out "$work/train" --count 8000 --seed "$train_seed"
python scripts/make_shapes_dataset.py --out "$work/eval" --count 500 --seed "$eval_seed"

captioner train \
    --data "$work/train/captions.jsonl" --out "$work/run" \
    --depth-multiplier 0.1 --min-depth 8 --embedding-size 64 --lstm-units 128 \
    --held-out 0.05 --image-cache-mb 5000 \
    --decoder-steps 0 --full-steps 6000 --batch-size 32 \
    --full-learning-rate 0.003 --warmup-steps 200 --aux-weight 1.0 \
    --checkpoint-every 500 --seed "$train_seed"
trained=$(date +%s)

captioner evaluate --data "$work/eval/captions.jsonl" --checkpoint "$work/run/checkpoint" \
    --json --quiet | tee "$work/evaluation.json"

rm -rf "$demo_dir/checkpoint" "$demo_dir/word_counts.txt"
mkdir -p "$demo_dir/checkpoint"
cp "$work"/run/checkpoint/* "$demo_dir/checkpoint/"
cp "$work/run/word_counts.txt" "$demo_dir/word_counts.txt"
finished=$(date +%s)
echo "demo model installed in $demo_dir: data and training $((trained - started)) s," \
    "all $((finished - started)) s; work files in $work" >&2
