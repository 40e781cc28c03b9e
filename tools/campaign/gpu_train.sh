#!/usr/bin/env bash
# The GPU training run of the default model (ddc-small), as executed through the device tool.
# Data arrives pre-tokenized in .stage5 (GPT-2 ids as xz-compressed uint16, made here from
# ../shared/data/train with `python -m ddcompress.train.data`; see models/ddc-small/README.md).
# Usage: tools/campaign/gpu_train.sh MINUTES OUTDIR [extra ddc train options]
set -euo pipefail
MIN=${1:-6.5}
OUTDIR=${2:-/tmp/out}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
DATA=()
for f in .stage5/train-*.u16.xz; do DATA+=(--data "$f"); done
python3 -m ddcompress.train "${DATA[@]}" --valid .stage5/valid.u16.npy --out /tmp/run \
  --d-model 512 --n-layer 8 --n-head 8 --seq-len 1024 --batch-size 32 \
  --lr 1e-3 --warmup 200 --ema 0.999 --max-minutes "$MIN" \
  --eval-every 1000 --eval-windows 128 --eval-passes 2 --save-every 0 --log-every 100 \
  --export-dtype int8 --name ddc-small --device cuda "${@:3}"
mkdir -p "$OUTDIR"
# the model file exceeds the 16 MiB per-file transfer limit: split it, reassembled with cat
split -b 15m -d /tmp/run/ddc-small/model.safetensors "$OUTDIR/model.safetensors.part"
sha256sum /tmp/run/ddc-small/model.safetensors | tee "$OUTDIR/model.sha256"
tar czf "$OUTDIR/run.tgz" -C /tmp/run ddc-small/config.json metrics.jsonl summary.json $(cd /tmp/run && ls loss.png 2>/dev/null)
