"""The library API (ddcompress/api.py) beyond bytes in, bytes out: where the time goes, argument checks."""
from __future__ import annotations

import pytest

import ddcompress
from ddcompress.errors import DDCError
from samples import words


def test_timings_split_the_work_between_denoiser_and_coder(tiny_lm):
    data = words(300, seed=4)
    enc, dec = {}, {"model": 1.0}
    blob = ddcompress.compress(data, model=tiny_lm, method="mdm", level=1, timings=enc)
    assert set(enc) == {"model", "coder"} and enc["model"] > 0 and enc["coder"] > 0
    assert ddcompress.decompress(blob, model=tiny_lm, timings=dec) == data
    assert dec["model"] > 1.0 and dec["coder"] > 0  # added to what was there
    stored = {}
    ddcompress.compress(data, model=tiny_lm, method="store", timings=stored)
    assert stored == {}  # no model ran


@pytest.mark.parametrize("call", [
    lambda: ddcompress.compress(b"abc", timings=[]),
    lambda: ddcompress.decompress(ddcompress.compress(b"abc", method="store"), timings=3),
])
def test_timings_must_be_a_dict(call):
    with pytest.raises(DDCError, match="^timings must be None or a dict, got"):
        call()
