"""Detokenizers of the zero-shot perplexity protocol (GPT-2 paper, Megatron, SEDD, MDLM, MD4).

WikiText, PTB and LM1B ship pre-tokenized ("do n't", "3 @.@ 5", "( a )"); GPT-2-tokenized models were
trained on natural text, so the published numbers first undo that spacing. These are written from the
documented behaviour of those detokenizers (same rules, same order), not copied. One deliberate
difference, kept so that no word is rewritten: the PTB detokenizer keeps "N" (numbers) and "<unk>"
(upstream turns them into "1" and "?"); `ptb_detokenizer(x, upstream=True)` restores that.
"""
from __future__ import annotations

import re


def wikitext_detokenizer(s: str) -> str:
    # contractions
    s = s.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    # number separators: 1 @,@ 000 -> 1,000; 3 @.@ 5 -> 3.5; well @-@ known -> well-known
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    # punctuation
    for p in ":;.!?,":
        s = s.replace(f" {p} ", f"{p} ")
    # brackets and quotes hug their contents
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    # section headers "= = Title = =" -> "== Title =="
    s = s.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    s = s.replace(" \u00b0 ", "\u00b0")
    s = s.replace(" \n", "\n").replace("\n ", "\n")
    s = s.replace(" N ", " 1 ")
    s = s.replace(" 's", "'s")
    return s


def ptb_detokenizer(s: str, upstream: bool = False) -> str:
    s = s.replace(" 's", "'s").replace("s ' ", "s' ").replace(" n't", "n't")
    s = s.replace(" \n ", "\n").replace("\\/", "/")
    if upstream:  # SEDD/MDLM also rewrite the corpus' number and unknown-word placeholders
        for _ in range(10):  # overlapping matches ("N N N") need repeated passes
            s = s.replace(" N ", " 1 ")
        s = s.replace("$ 1", "$1").replace("# 1", "#1").replace("<unk>", "?")
    return s


def lambada_detokenizer(s: str) -> str:
    # OpenAI's LAMBADA file is already natural text: only curly double quotes are straightened,
    # and (as in MDLM) each passage starts on a new line.
    s = s.replace("\u201c", '"').replace("\u201d", '"')
    return "\n" + s.strip()


def lm1b_detokenizer(s: str) -> str:
    s = s.replace("http : / / ", "http://").replace("https : / / ", "https://")
    s = re.sub(r" '(\w+)", r"'\1", s)  # " 's", " 're" ...
    s = re.sub(r" (\w+) \. ", r" \1. ", s)
    s = re.sub(r" (\w+) \.$", r" \1.", s)
    s = s.replace(" ? ", "? ")
    s = re.sub(r" \?$", "?", s)
    s = s.replace(" ! ", "! ")
    s = re.sub(r" !$", "!", s)
    s = s.replace(" , ", ", ").replace(" : ", ": ").replace(" ; ", "; ").replace(" / ", "/")
    s = re.sub(r"\" ([^\"]+) \"", r'"\1"', s)
    s = re.sub(r"' ([^']+) '", r"'\1'", s)
    s = re.sub(r"\( ([^\(\)]+) \)", r"(\1)", s)
    s = re.sub(r"\[ ([^\[\]]+) \]", r"[\1]", s)
    s = s.replace("$ ", "$").replace("\u00a3 ", "\u00a3")
    return s


DETOKENIZERS = {
    "wikitext2": wikitext_detokenizer,
    "wikitext103": wikitext_detokenizer,
    "ptb": ptb_detokenizer,
    "lambada": lambada_detokenizer,
    "lm1b": lm1b_detokenizer,
}
