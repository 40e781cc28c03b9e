"""Reports of `ddc bench`, rendered from the JSON report alone (so old results can be re-rendered
with `ddc bench --render REPORT.json`): Markdown in the MD4 table layout, terminal tables, a plot."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from .corpora import DATASETS, TITLES

# Zero-shot perplexity bounds per GPT-2 token, columns in DATASETS order, as published
# (GPT-2, SEDD, MDLM and MD4 papers). None = not reported.
PUBLISHED = {
    "GPT-2 small (AR)": (45.04, 42.43, 138.43, 41.60, 75.20),
    "D3PM": (93.47, 77.28, 200.82, 75.16, 138.92),
    "Plaid": (57.28, 51.80, 142.60, 50.86, 91.12),
    "SEDD absorb small": (50.92, 41.84, 114.24, 40.62, 79.29),
    "MD4 small": (48.43, 34.94, 102.26, 35.90, 68.10),
    "MD4 medium": (44.12, 25.84, 66.07, 25.84, 51.45),
    "MDLM (own protocol)": (47.52, 32.83, 95.26, None, 67.01),
}
def _f(x, nd=2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _notes(report: dict) -> list[str]:
    out = [report["protocol"]]
    for r in report["results"]:
        if not r["available"]:
            out.append(r["reason"])
            continue
        bits = [f"{TITLES[r['dataset']]}: {r['split']} split from {r['source']}, {r['gpt2_tokens']:,} tokens, {r['bytes']:,} bytes"]
        if r["truncated"]:
            bits.append(f"TRUNCATED to the first {r['max_tokens']:,} tokens (--max-tokens)")
        if r["dropped_tail_tokens"]:
            bits.append(f"{r['dropped_tail_tokens']} tail tokens dropped")
        if r["note"]:
            bits.append(r["note"])
        short = " (target not reached: raise --max-passes or --max-tokens)" if r["nelbo_rel_stderr"] > report["settings"]["target"] else ""
        bits.append(f"NELBO from {r['nelbo_draws_per_chunk']} t draws per chunk (rel. stderr {100 * r['nelbo_rel_stderr']:.2f}%{short})")
        v = [c for c in r["coded"] if c["verified"] is not None]
        if v:
            bits.append(f"round trip at {v[0]['steps']} steps: {'OK' if v[0]['verified'] else 'FAILED'}")
        out.append("; ".join(bits))
    if any(r["available"] and r["split"] != "validation" and r["dataset"] in ("wikitext2", "wikitext103", "ptb") for r in report["results"]):
        out.append("Published WikiText/PTB numbers (MDLM protocol) use the validation split; these use the test split.")
    return out


def _ppl_rows(report: dict) -> list[tuple[str, list[str], str]]:
    by = {r["dataset"]: r for r in report["results"] if r["available"]}
    rows = [(m, [_f(v) for v in vals], "published") for m, vals in PUBLISHED.items()]
    name = report["model"]["name"]
    rows.append((f"{name} NELBO bound", [f"{by[d]['elbo_ppl']:.2f} ± {by[d]['elbo_stderr']:.2f}" if d in by else "-" for d in DATASETS], "measured"))
    for s in report["settings"]["steps"]:
        rows.append((f"{name} coded, {s} steps", [_f(by[d]["coded_ppl"].get(str(s))) if d in by else "-" for d in DATASETS], "measured"))
        if any(_unmixed(r, s) is not None for r in by.values()):  # (reports before format 5 have no such row)
            rows.append((f"{name} without mixing, {s} steps (ideal)", [_f(_unmixed(by[d], s)) if d in by else "-"
                                                                          for d in DATASETS], "measured"))
    return rows


def _unmixed(rec: dict, steps: int) -> float | None:
    """The denoiser's own code length (no context mixing) as a perplexity, at `steps` steps."""
    return next((c.get("unmixed_ppl") for c in rec["coded"] if c["steps"] == steps), None)


def _baseline_names(report: dict) -> list[str]:
    names: dict[str, None] = {}
    for r in report["results"]:
        names.update(dict.fromkeys(r.get("baselines") or {}))
    return list(names)


def _bpb_header(report: dict) -> list[str]:
    names = _baseline_names(report)
    return ["dataset", "bytes", "tokens", "NELBO bound"] + [f"ddc {s} steps" for s in report["settings"]["steps"]] + names


def _bpb_rows(report: dict) -> list[list[str]]:
    rows = []
    for r in report["results"]:
        if not r["available"]:
            continue
        base = [_f((r["baselines"].get(k) or {}).get("bpb"), 3) for k in _baseline_names(report)]
        rows.append([TITLES[r["dataset"]], f"{r['bytes']:,}", f"{r['gpt2_tokens']:,}", _f(r["nelbo_bpb"], 3)]
                    + [_f(r["bpb"].get(str(s)), 3) for s in report["settings"]["steps"]] + base)
    return rows


def to_markdown(report: dict) -> str:
    m, mach = report["model"], report["machine"]
    lines = [f"# ddc bench: {m['name']}", "",
             f"Measured {report['date']} with ddc {report['ddc_version']} on {mach['hardware']} "
             f"(torch {mach['torch']}, {mach['threads']} threads).", "",
             f"Model `{m['name']}` (id `{m['id']}`), L = {m['seq_len']}, {m['params']:,} parameters, "
             f"{_f(m['bytes'] and m['bytes'] / 1e6, 1)} MB on disk ({m['bytes']} bytes; not included in any bits/byte below).", "",
             f"Command: `{report['command']}`", "",
             "## Zero-shot perplexity (per GPT-2 token; lower is better)", "",
             "| model | " + " | ".join(TITLES[d] for d in DATASETS) + " | source |",
             "|---|" + "---|" * (len(DATASETS) + 1)]
    lines += [f"| {n} | " + " | ".join(v) + f" | {s} |" for n, v, s in _ppl_rows(report)]
    hdr = _bpb_header(report)
    lines += ["", "## Coded size vs general-purpose compressors (bits per byte; lower is better)", "",
              "| " + " | ".join(hdr) + " |", "|---|" + "---|" * (len(hdr) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in _bpb_rows(report)]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in _notes(report)]
    return "\n".join(lines) + "\n"


def print_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console() if sys.stdout.isatty() else Console(width=220, no_color=True)
    t = Table(title="Zero-shot perplexity per GPT-2 token (lower is better)")
    for c in ["model"] + [TITLES[d] for d in DATASETS] + ["source"]:
        t.add_column(c, justify="left" if c in ("model", "source") else "right")
    for n, v, s in _ppl_rows(report):
        t.add_row(n, *v, s, style="bold" if s == "measured" else None)
    con.print(t)
    t = Table(title=f"Bits per byte (lower is better); model file {report['model']['bytes']:,} bytes, not counted")
    for c in _bpb_header(report):
        t.add_column(c, justify="left" if c == "dataset" else "right")
    for r in _bpb_rows(report):
        t.add_row(*r)
    con.print(t)
    for n in _notes(report)[1:]:
        con.print(f"- {n}", highlight=False, soft_wrap=True)


def plot(report: dict, path: Path) -> bool:
    """Bits/token against steps per chunk, NELBO bound dashed; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(x for x in report["results"] if x["available"]):
        col = f"C{i}"
        ax.plot([c["steps"] for c in r["coded"]], [c["bits_per_token"] for c in r["coded"]], "o-", color=col, label=f"{TITLES[r['dataset']]} coded")
        ax.axhline(r["nelbo_nats_per_token"] / math.log(2), color=col, ls="--", lw=1, label=f"{TITLES[r['dataset']]} NELBO")
    ax.set_xscale("log")
    ticks = sorted({c["steps"] for r in report["results"] if r["available"] for c in r["coded"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("reverse steps per chunk")
    ax.set_ylabel("bits per GPT-2 token")
    ax.set_title(f"ddc {report['model']['name']}: coded size vs steps (L = {report['model']['seq_len']})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True




def render(json_path: Path, md_path: Path | None = None, png_path: Path | None = None) -> list[Path]:
    """Write the Markdown (and the plot, when matplotlib is there) of a JSON report; returns the paths."""
    import json

    report = json.loads(Path(json_path).read_text())
    md_path = md_path or Path(json_path).with_suffix(".md")
    md_path.write_text(to_markdown(report))
    wrote = [md_path]
    png_path = png_path or Path(json_path).with_suffix(".png")
    if plot(report, png_path):
        wrote.append(png_path)
    return wrote
