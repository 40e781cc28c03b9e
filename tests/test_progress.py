"""ddcompress/progress.py: the commands' one progress helper (ddc's token bar, bench's bars, train's
line): on stderr, only on a terminal, never when quiet, after its delay; the library never imports it."""
from __future__ import annotations

import io
import subprocess
import sys

from ddcompress import progress
from ddcompress.cli.files import _Progress
from ddcompress.train.report import progress_line


class Terminal(io.StringIO):
    def isatty(self):
        return True


def on_terminal(monkeypatch) -> Terminal:
    """stderr is a terminal (what rich writes lands here). Set in the test itself: pytest puts its own
    stderr back between a fixture's setup and the test."""
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    return term


def test_nothing_shows_off_a_terminal(monkeypatch):
    piped = io.StringIO()
    for stderr in (piped, None):  # a pipe or a file; no stderr at all
        monkeypatch.setattr(sys, "stderr", stderr)
        bars = progress.Bars(("{task.description}", "bar"))
        bars.update("x", 1, 2)
        bars.close()
        assert not bars.enabled and bars._progress is None
    assert piped.getvalue() == ""


def test_nothing_shows_when_quiet(monkeypatch):
    terminal = on_terminal(monkeypatch)
    bars = progress.Bars(("{task.description}", "bar"), enabled=False)
    bars.update("x", 1, 2)
    bars.close()
    assert bars._progress is None and terminal.getvalue() == ""


def test_a_bar_shows_after_its_delay_with_its_columns(monkeypatch):
    terminal = on_terminal(monkeypatch)
    bars = progress.Bars(("{task.description}", "bar", "percent", "{task.fields[rate]:.0f} tok/s"), delay=1.0)
    bars.update("compress a.txt", 5, 10, rate=7)
    assert bars._progress is None  # within the delay: nothing yet
    bars.t0 -= 1.5
    bars.update("compress a.txt", 6, 10, rate=8)
    bars.update("other", 1, 4, rate=1)
    bars.remove("other")  # (bench: a finished measurement's bar goes)
    assert [t.description for t in bars._progress.tasks] == ["compress a.txt"]
    bars.close()
    out = terminal.getvalue()
    assert "compress a.txt" in out and "60%" in out and "8 tok/s" in out


def test_print_goes_to_stderr_with_or_without_bars(monkeypatch):
    terminal = on_terminal(monkeypatch)
    with progress.Bars(("{task.description}",)) as bars:
        bars.print("a line above", highlight=False)
        bars.update("x", 1, 2)
    assert "a line above" in terminal.getvalue()
    off = io.StringIO()
    monkeypatch.setattr(sys, "stderr", off)
    progress.Bars(("{task.description}",)).print("measured 3 things")  # bench's lines, piped
    assert off.getvalue() == "measured 3 things\n"


def test_ddc_token_bar(monkeypatch):
    terminal = on_terminal(monkeypatch)
    quiet, shown = _Progress("compress q", False), _Progress("compress a.txt", True)
    for bar in (quiet, shown):
        bar.start(1000)
        bar.advance(100)
        assert bar.bars._progress is None
        bar.bars.t0 -= 2.0  # the bar appears once the work ran for a second
        bar.advance(100)
        bar.close()
    out = terminal.getvalue()
    assert "compress q" not in out and quiet.bars._progress is None
    assert "compress a.txt" in out and "200/1,000 tok" in out and " tok/s" in out


def test_train_line_stays_on_a_terminal_and_is_off_elsewhere(monkeypatch):
    terminal = on_terminal(monkeypatch)
    line = progress_line(True, 50, "steps")
    line.update("train", 20, info="loss 3.2")
    line.close()
    assert "train" in terminal.getvalue() and "20/50 steps" in terminal.getvalue() and "loss 3.2" in terminal.getvalue()
    assert not line.transient  # the last state stays on screen
    assert not progress_line(False, 50, "steps").enabled  # a log function given: plain lines
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_line(True, 50, "steps").enabled


def test_the_library_does_not_import_rich_or_the_helper():
    code = ("import sys, ddcompress, ddcompress.api, ddcompress.codec.coder; "
            "print(sorted(m for m in sys.modules if m.startswith(('rich', 'ddcompress.progress'))))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
