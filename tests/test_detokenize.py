"""Detokenizers of the zero-shot protocol on known strings."""
from ddcompress.bench.detokenize import (
    DETOKENIZERS,
    lambada_detokenizer,
    lm1b_detokenizer,
    ptb_detokenizer,
    wikitext_detokenizer,
)


def test_wikitext_number_separators_punctuation_brackets_quotes():
    raw = (' = Robert Boulter = \n \n He had a guest @-@ starring role in " Teddy \'s Story " ( 2000 ) , '
           "with 1 @,@ 000 fans and 3 @.@ 5 stars ; great : yes ! Really ? No . \n = = Career = = \n")
    assert wikitext_detokenizer(raw) == (
        ' = Robert Boulter =\n\nHe had a guest-starring role in "Teddy\'s Story" (2000), '
        "with 1,000 fans and 3.5 stars; great: yes! Really? No.\n== Career ==\n")


def test_wikitext_headers_possessive_degree():
    assert wikitext_detokenizer(" = = = Early life = = = \n") == " === Early life ===\n"
    assert wikitext_detokenizer("the players ' union") == "the players' union"
    assert wikitext_detokenizer("at 5 \u00b0 C") == "at 5\u00b0C"
    assert wikitext_detokenizer("[ 1 ] { x }") == "[1] {x}"


def test_ptb_keeps_numbers_and_unk_by_default():
    s = "it was n't the company 's fault N \\/ <unk> $ N"
    assert ptb_detokenizer(s) == "it wasn't the company's fault N / <unk> $ N"
    assert ptb_detokenizer("the workers ' pay") == "the workers' pay"
    assert ptb_detokenizer("a \n b") == "a\nb"


def test_ptb_upstream_variant():
    assert ptb_detokenizer("up N N N % to $ N <unk> ", upstream=True) == "up 1 1 1 % to $1 ? "


def test_lambada_quotes_and_leading_newline():
    assert lambada_detokenizer("  \u201cHi,\u201d she said.  ") == '\n"Hi," she said.'


def test_lm1b():
    s = 'He said " hello there " , and it \'s at http : / / example.com now . Costs $ 5 or \u00a3 3 ?'
    assert lm1b_detokenizer(s) == 'He said "hello there", and it\'s at http://example.com now. Costs $5 or \u00a33?'
    assert lm1b_detokenizer("I saw ( it ) ; then ' x ' !") == "I saw (it); then 'x'!"


def test_every_dataset_has_one():
    assert set(DETOKENIZERS) == {"wikitext2", "wikitext103", "ptb", "lambada", "lm1b"}
