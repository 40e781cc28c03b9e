"""Peak memory and time of decoding crafted hostile files (issue 22): the chunk-count and group-size
attacks of tests/support/fuzz.py (`attack_files`), made for a real model (default ddc-small, L = 1024), each
decoded in a fresh process (`fuzz.probe`) under an address-space limit of what the loaded model
maps plus --headroom-gib.

    python benchmarks/decoder_limits.py [--model ddc-small] [--groups 16384] [--headroom-gib 8]
                                        [--tree DIR --label before]   # another checkout's ddcompress

Writes benchmarks/results/decoder-limits.md (and .json); with --tree, appends that tree's rows to the
JSON and rewrites the Markdown with both."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support import fuzz as tf  # noqa: E402  (the attacks and the probe)

RESULTS = ROOT / "benchmarks" / "results"
WHAT = {
    "group_size_2^20_empty_streams": "the issue's file: 2^40 tokens, group size 2^20, 1,024 empty streams",
    "group_size_cap+1": "group size 65 (one over the cap), one random stream",
    "tokens_2^40_short_table": "2^40 tokens at group size 64 over a table of only --groups groups",
    "chunks_at_cap_empty_streams": "--groups groups of 64 chunks (2^30 tokens at 16,384), every stream empty",
    "chunks_at_cap_shortest_payloads": "the same with the shortest random payloads the size check lets through",
    "chunks_at_cap_first_group_whole": "the same, the first group's random stream long enough to decode it whole",
}


def run(args, name: str, path: Path, tree: Path) -> dict:
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from support import fuzz as t; "
            "print(json.dumps(t.probe(sys.argv[2], sys.argv[3], float(sys.argv[4]))))")
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests"), str(path), args.model,
                              str(args.headroom_gib * 1024)], capture_output=True, text=True, timeout=args.timeout, env=env,
                             cwd=tree)
    except subprocess.TimeoutExpired:
        return {"outcome": f"timeout after {args.timeout} s", "wall_s": time.perf_counter() - t0}
    if res.returncode != 0:
        return {"outcome": f"process died (exit {res.returncode})", "message": res.stderr.strip()[-300:],
                "wall_s": time.perf_counter() - t0}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ddc-small")
    ap.add_argument("--groups", type=int, default=16384, help="groups of the at-cap attacks (16,384: 2^30 tokens at L = 1024)")
    ap.add_argument("--headroom-gib", type=float, default=8.0, help="RLIMIT_AS: the loaded model's mappings plus this")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose ddcompress decodes (default: this one)")
    ap.add_argument("--label", default="this tree")
    ap.add_argument("--rev", default=None, help="the git revision --tree holds, when it is no git checkout")
    ap.add_argument("--out", type=Path, default=RESULTS / "decoder-limits")
    args = ap.parse_args()

    from ddcompress.model import registry
    from ddcompress.bench.cli import cpu_name
    from ddcompress.codec.tokenizer import get_tokenizer

    lm = registry.resolve(args.model)
    files = tf.attack_files(lm.id, get_tokenizer().id[:8], lm.cfg.seq_len, n_groups=args.groups)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.tree, capture_output=True, text=True).stdout.strip()
    rev = args.rev or rev or "?"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (blob, want) in files.items():
            path = Path(tmp) / f"{name}.ddc"
            path.write_bytes(blob)
            rec = run(args, name, path, args.tree.resolve()) | {"attack": name, "expected": want, "file_bytes": len(blob),
                                                                 "tree": args.label, "git": rev}
            print(json.dumps(rec), file=sys.stderr)
            rows.append(rec)
    stem = args.out
    old = json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").exists() else {}
    report = {"command": " ".join(["python"] + sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "model": f"{args.model} ({lm.id}, L = {lm.cfg.seq_len})", "headroom_gib": args.headroom_gib,
              "runs": [r for r in old.get("runs", []) if r.get("tree") != args.label] + rows,
              "commands": sorted(set(old.get("commands", [])) | {" ".join(["python"] + sys.argv)})}
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    m = report["machine"]
    lines = ["# Decoder limits: peak memory and time of decoding crafted files (issue 22)", "",
             f"Commands: {'; '.join(f'`{c}`' for c in report['commands'])} ({report['date']})", "",
             f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs (shared with other work), Python {m['python']}; "
             f"model {report['model']}; each file decoded in a fresh process with one torch thread, the model loaded "
             f"first, under RLIMIT_AS = what the process maps then + {args.headroom_gib:g} GiB. Peak RSS is the "
             "process's VmHWM (model and torch included); growth is VmHWM after the decode less VmRSS before it.", "",
             "| tree | attack | file bytes | outcome | wall s | CPU s | peak RSS MiB | RSS growth MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        def num(k, f="{:.2f}"):
            return f.format(r[k]) if k in r else "-"
        lines.append(f"| {r['tree']} ({r['git']}) | {r['attack']} | {r['file_bytes']:,} | {r['outcome']} | {num('wall_s')} | "
                     f"{num('cpu_s')} | {num('peak_rss_mib', '{:.0f}')} | {num('rss_growth_mib', '{:.0f}')} |")
    lines += ["", "Attacks (`tests/support/fuzz.py: attack_files`, every header check passes: valid CRCs, consistent "
              "fields, the table the layout implies):", ""] + [f"* `{k}`: {v}" for k, v in WHAT.items()]
    lines += ["", "Messages of the last run of each tree:", ""]
    lines += [f"* {r['tree']}, `{r['attack']}`: {r.get('message', '')}" for r in report["runs"]]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"-> {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
