#!/usr/bin/env bash
# The GPU training campaign (issue 8), as short commands for the device tool; the call plan and budget are
# in tools/campaign/gpu_campaign.py's docstring and tools/campaign/CAMPAIGN.md.
#
# here:  tools/campaign/gpu_campaign.sh prepare [prepare options]   untrack weights, stage parts, check sizes
#        tools/campaign/gpu_campaign.sh collect FILES_AT [--to DIR]  reassemble + verify, then retrack weights
#        tools/campaign/gpu_campaign.sh untrack | retrack | check
# GPU:   tools/campaign/gpu_campaign.sh start [MINUTES] [recipe options]   (carry .stage-campaign/part0)
#        tools/campaign/gpu_campaign.sh add K                              (carry .stage-campaign/partK)
#        tools/campaign/gpu_campaign.sh finish [K] [--limit-s S]           (carry .stage-campaign/partK; writes $OUT)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=tools/campaign/gpu_campaign.py
LIST=.stage-campaign/untracked.txt
EXCLUDE=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
cmd=${1:-help}
shift || true
case "$cmd" in
  untrack)  # the shipped weights stop travelling with device calls; nothing is committed, the files stay
    mkdir -p .stage-campaign "$(dirname "$EXCLUDE")"
    git ls-files -- '*.safetensors' >"$LIST.new"
    if [ -s "$LIST.new" ]; then
      cat "$LIST.new" >>"$LIST"
      git rm -q --cached --pathspec-from-file="$LIST.new"
      { echo "# gpu_campaign untrack (tools/campaign/gpu_campaign.sh retrack removes these lines)"; sed 's|^|/|' "$LIST.new"; echo "# gpu_campaign end"; } >>"$EXCLUDE"
      echo "untracked for device calls (retrack before any commit): $(tr '\n' ' ' <"$LIST.new")"
    fi
    rm -f "$LIST.new" ;;
  retrack)  # undo untrack: index entries back from HEAD, exclude lines removed
    if [ -s "$LIST" ]; then
      git reset -q -- $(sort -u "$LIST")
      rm -f "$LIST"
    fi
    if [ -f "$EXCLUDE" ]; then
      sed -i '/^# gpu_campaign untrack/,/^# gpu_campaign end$/d' "$EXCLUDE"
    fi
    git status --short -- models ddcompress | head -5
    echo "weights tracked again" ;;
  prepare)
    "$0" untrack
    python3 $PY prepare "$@"
    python3 $PY check ;;
  check) python3 $PY check "$@" ;;
  collect)
    python3 $PY collect "$@"
    "$0" retrack ;;
  start)
    MIN=${1:-8}
    shift || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 $PY start --stage .stage-campaign/part0 --minutes "$MIN" "$@" ;;
  add) python3 $PY add --stage ".stage-campaign/part$1" ;;
  finish)
    K=${1:-}
    shift || true
    python3 $PY finish ${K:+--stage ".stage-campaign/part$K"} --out "${OUT:-out}" "$@" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
