#!/usr/bin/env bash
# The standard `ddc bench` runs behind the tables in benchmarks/README.md.
#   benchmarks/run_bench.sh [full|cpu|smoke] [MODEL]      (env: DATA_DIR, DEVICE, OUT_DIR)
# full : every corpus, whole test sets, steps 4..L (needs a GPU: DEVICE=cuda)
# cpu  : every corpus cut to 16384 tokens, default level only (a CPU-sized sample)
# smoke: 300 tokens per corpus; checks the pipeline in seconds with any checkpoint
set -euo pipefail
mode=${1:-full}
model=${2:-ddc-small}
here=$(cd "$(dirname "$0")/.." && pwd)
data=${DATA_DIR:-$here/../shared/data/eval}
out=${OUT_DIR:-$here/benchmarks/results}
case $mode in
  full)  exec ddc bench --dataset all --data-dir "$data" --model "$model" --device "${DEVICE:-cuda}" \
                        --steps 4 8 16 64 256 L --verify --out-dir "$out" ;;
  cpu)   exec ddc bench --dataset all --data-dir "$data" --model "$model" --device "${DEVICE:-cpu}" \
                        --max-tokens 16384 --steps 16 --verify --out-dir "$out" ;;
  smoke) exec ddc bench --dataset all --data-dir "$data" --model "$model" --device "${DEVICE:-cpu}" \
                        --max-tokens 300 --steps 4 64 --verify --offline --out-dir "$out" ;;
  *) echo "usage: $0 [full|cpu|smoke] [MODEL]" >&2; exit 2 ;;
esac
