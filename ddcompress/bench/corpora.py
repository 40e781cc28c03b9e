"""Zero-shot evaluation corpora (the SEDD/MDLM/MD4 protocol) as documents and GPT-2 token streams.

Sources: a local data directory first (`--data-dir`, laid out as shared/data/eval), then the
Hugging Face hub. The hub is probed with a short timeout before `datasets` is touched, so an
unreachable network costs seconds, not a hang; a corpus that cannot be had raises DatasetUnavailable
with a one-line reason and the caller carries on with the others.
"""
from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .detokenize import DETOKENIZERS
from ..codec.tokenizer import EOS_ID, get_tokenizer

DATASETS = ("lambada", "wikitext2", "ptb", "wikitext103", "lm1b")  # column order of the MD4 table
TITLES = {"lambada": "LAMBADA", "wikitext2": "WikiText2", "ptb": "PTB", "wikitext103": "WikiText103", "lm1b": "1BW"}
SEP = b"\x1e"  # one byte per document boundary in the byte stream (the model codes EOS there)
LAMBADA_URL = "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"
HUB_URL = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0


class DatasetUnavailable(Exception):
    """The corpus cannot be had here (offline, missing file, hub error); the message is one line."""


@dataclass
class Corpus:
    name: str
    split: str
    source: str  # file path or hub id it came from
    documents: list[str]  # detokenized
    note: str = ""  # protocol remarks worth printing beside the numbers


# -- splitting raw files into documents ------------------------------------------------------------


def _is_title(line: str) -> bool:
    """A top-level WikiText heading " = Title = " (sub-headings have "= =")."""
    s = line.strip()
    return len(s) > 4 and s.startswith("= ") and s.endswith(" =") and not s.startswith("= =") and not s.endswith("= =")


def wikitext_articles(text: str) -> list[str]:
    """Raw WikiText -> one string per article, cut before each top-level heading line."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _is_title(line)] or [0]
    starts[0] = 0  # anything before the first heading belongs to the first article
    return ["".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]


def _nonempty_lines(text: str) -> list[str]:
    return [s.strip() for s in text.splitlines() if s.strip()]


def _jsonl_texts(text: str) -> list[str]:
    return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]


# -- local files -----------------------------------------------------------------------------------


def _local(name: str, split: str, data_dir: Path) -> tuple[list[str], str, str] | None:
    """(raw documents, source, note), or None when data_dir lacks this corpus."""
    if name in ("wikitext2", "wikitext103"):
        note = "WikiText-103's valid/test articles are WikiText-2's: read from wikitext2/" if name == "wikitext103" else ""
        for sub in dict.fromkeys([name, "wikitext2"]):
            p = data_dir / sub / f"wiki.{'valid' if split == 'validation' else split}.raw"
            if p.is_file():
                return wikitext_articles(p.read_text(encoding="utf-8")), str(p), note if sub != name else ""
        return None
    if name == "ptb":
        p = data_dir / "ptb" / f"ptb.{'valid' if split == 'validation' else split}.txt"
        return (_nonempty_lines(p.read_text(encoding="utf-8")), str(p), "") if p.is_file() else None
    if name == "lambada":
        p = data_dir / "lambada" / "lambada_test.jsonl"
        return (_jsonl_texts(p.read_text(encoding="utf-8")), str(p), "") if p.is_file() else None
    if name == "lm1b":
        p = data_dir / "lm1b" / "test.txt"  # one sentence per line (the news.en.heldout shard)
        return (_nonempty_lines(p.read_text(encoding="utf-8")), str(p), "") if p.is_file() else None
    raise ValueError(f"unknown dataset {name!r}")


# -- the hub ---------------------------------------------------------------------------------------


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if an HTTP HEAD to url answers within timeout (any status). Runs in a thread because
    DNS lookups ignore socket timeouts; honours proxy settings like `datasets` does."""
    import urllib.error
    import urllib.request

    ok = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            ok.append(True)
        except urllib.error.HTTPError:
            ok.append(True)  # the server answered
        except Exception:
            pass

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    th.join(timeout + 0.5)
    return bool(ok)


def _go_offline() -> None:
    """Make `datasets` use its cache only (it reads these at import; patch it too if imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import sys

    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True


def _hub(name: str, split: str, offline: bool) -> tuple[list[str], str, str]:
    if importlib.util.find_spec("datasets") is None:  # not imported yet: it reads the offline flags at import
        raise DatasetUnavailable(f"{name}: not found locally (pass --data-dir), and the hub needs the "
                                 "'bench' extra (pip install 'ddcompress[bench]')")
    url = LAMBADA_URL if name == "lambada" else HUB_URL
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
    online = not offline and _reachable(url)
    if not online:
        _go_offline()
    try:
        import datasets

        if name == "lambada":
            ds, src, key = datasets.load_dataset("json", data_files=LAMBADA_URL, split="train"), LAMBADA_URL, "text"
        elif name in ("wikitext2", "wikitext103"):
            cfg = "wikitext-2-raw-v1" if name == "wikitext2" else "wikitext-103-raw-v1"
            ds, src, key = datasets.load_dataset("Salesforce/wikitext", cfg, split=split), f"Salesforce/wikitext:{cfg}", "text"
        elif name == "ptb":
            ds, src, key = datasets.load_dataset("ptb-text-only/ptb_text_only", split=split), "ptb_text_only", "sentence"
        else:
            ds, src, key = datasets.load_dataset("lm1b", split="test"), "lm1b", "text"
        rows = ds[key]
    except Exception as err:  # any failure of the hub or cache: one line, not a traceback
        why = f"{'offline' if offline else 'hub unreachable'} and not in the local datasets cache" if not online else (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise DatasetUnavailable(f"{name}: unavailable ({why})") from None
    if name in ("wikitext2", "wikitext103"):
        return wikitext_articles("".join(rows)), src, ""  # hub rows are the raw file's lines, newlines kept
    return [r.strip() for r in rows if r.strip()], src, ""


# -- public ----------------------------------------------------------------------------------------


def load_corpus(name: str, split: str = "test", data_dir: str | Path | None = None, offline: bool = False) -> Corpus:
    """Documents of one corpus, detokenized as in the published protocol.

    LAMBADA and LM1B have only the test split in the protocol and always use it. Documents: WikiText
    = articles (cut at top-level headings), PTB = sentences (lines), LAMBADA = passages, LM1B = sentences.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    if split not in ("test", "validation"):
        raise ValueError("split must be test or validation")
    note = ""
    if name in ("lambada", "lm1b") and split != "test":
        split, note = "test", f"{TITLES[name]} has only a test split in the protocol"
    found = _local(name, split, Path(data_dir)) if data_dir else None
    try:
        raw, source, local_note = found if found else _hub(name, split, offline)
    except DatasetUnavailable as err:
        if data_dir:  # say where we looked first
            raise DatasetUnavailable(str(err).replace("unavailable (", f"unavailable ({split} split not in {data_dir}; ", 1)) from None
        raise
    detok = DETOKENIZERS[name]
    docs = [d for d in (detok(r).strip() if name.startswith("wikitext") else detok(r) for r in raw) if d]
    return Corpus(name, split, source, docs, "; ".join(n for n in (note, local_note) if n))


def token_stream(documents: list[str], max_tokens: int | None = None, batch: int = 2048) -> tuple[np.ndarray, bool]:
    """GPT-2 tokens of the documents, each followed by EOS, concatenated; cut to max_tokens.

    Returns (tokens, truncated). Tokenizes in batches and stops once max_tokens are reached.
    """
    tok = get_tokenizer()
    parts: list[np.ndarray] = []
    n, i = 0, 0
    while i < len(documents) and (max_tokens is None or n < max_tokens):
        for ids in tok.encode_many(documents[i : i + batch]):
            parts.append(np.append(ids, EOS_ID).astype(np.uint32))
            n += len(parts[-1])
        i += batch
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    truncated = max_tokens is not None and (len(tokens) > max_tokens or i < len(documents))
    return tokens[:max_tokens], truncated


def stream_bytes(tokens: np.ndarray) -> bytes:
    """The text a token stream stands for, with SEP in place of each EOS: what baselines compress,
    and the byte count behind bits/byte (document bytes + one separator per document)."""
    tok = get_tokenizer()
    tokens = np.asarray(tokens)
    out, start = [], 0
    for p in np.flatnonzero(tokens == EOS_ID).tolist():
        out += [tok.decode(tokens[start:p]), SEP]
        start = p + 1
    out.append(tok.decode(tokens[start:]))
    return b"".join(out)
