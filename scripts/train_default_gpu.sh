#!/usr/bin/env bash
# Train a decoder network on top of the built-in model on one GPU inside a single 9-minute call, then
# bring back what it made.
#
#   bash scripts/train_default_gpu.sh DATA OUT [train_default.py options...]
#
# DATA: a folder written by `magvit2 trainset` (build it where the image packages are installed and
#       copy it over: about 25 MB). OUT: receives log.jsonl and, when a step beat the starting weights,
#       best/ (fp16 model folder); checkpoints stay in a temporary folder. Options after OUT are passed
#       on to scripts/train_default.py and override the recipe below (the last of a repeated option
#       wins), e.g. `--lr 5e-5`, `--minutes 3`, or `--device cpu` for a dry run. The block-mean code
#       and its detail patterns come with the --init model.
# The recipe: a decoder network added to the shipped model (--decoder-network yes: its output starts at
# zero, so the model starts as the shipped one) and trained under --guard (best/ only takes weights
# that beat the shipped model on validation and are no worse on val_video, val_late, val_cast and
# flat_min), on 33-frame clips at 128x128, 6.5 minutes of steps. Held-out clips are never touched:
# check OUT/best afterwards with `python benchmarks/builtin_checks.py --model OUT/best`.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash scripts/train_default_gpu.sh DATA OUT [train_default.py options...]" >&2
    exit 2
fi
data=$1 out=$2
shift 2
if [ ! -f "$data/manifest.json" ]; then
    echo "$data: not a training set folder (no manifest.json); build one with \`magvit2 trainset\`" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" "$here/scripts/train_default.py" \
    --data "$data" --out "$run" --init "$here/src/magvit2/pretrained/default" --decoder-network yes --padding replicate --guard \
    --minutes 6.5 --batch 16 --frames 33 --size 128 --image-size 128 --image-batch 64 --image-every 3 \
    --flat-every 2 --flat-batch 32 --flat-frames 33 --val-every 150 --val-clips 24 --val-frames 33 \
    --val-size 96 --select all --lr 1e-4 --warmup 20 --ema 0.998 --mean-weight 3 --checkpoint-every 300 \
    --p-flat 0.3 --p-pure 0.5 --ramp-span 0.5 2.0 "$@"
mkdir -p "$out"
cp "$run/log.jsonl" "$out/log.jsonl"
if [ -d "$run/best" ]; then
    rm -rf "$out/best"
    cp -r "$run/best" "$out/best"
    echo "kept: $out/best"
else
    echo "no step beat the starting weights: nothing kept (see $out/log.jsonl)"
fi
