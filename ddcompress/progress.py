"""Progress bars for the commands (`ddc` compress/decompress/test, `ddc bench`, `ddc train`): rich, on
stderr, and only when stderr is a terminal (piped output and logs stay clean). The library (api, codec)
never shows one: it takes plain callbacks, which the commands turn into these. Rich loads when a bar
first shows or a line is printed, so a quick command never imports it."""
from __future__ import annotations

import sys
import time

# column names -> rich's column classes; any other column is a text template ("{task.fields[rate]} tok/s")
COLUMNS = {"bar": "BarColumn", "percent": "TaskProgressColumn", "elapsed": "TimeElapsedColumn",
           "remaining": "TimeRemainingColumn"}


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr (None), or a closed one
        return False


class Bars:
    """Bars keyed by label, shown if `enabled` and stderr is a terminal, once `delay` seconds have passed
    since this was made (work shorter than that shows none). `transient`: the bars vanish when closed
    (else the last state stays on screen)."""

    def __init__(self, columns: tuple[str, ...], enabled: bool = True, delay: float = 0.0, transient: bool = True):
        self.columns, self.delay, self.transient = columns, delay, transient
        self.enabled = enabled and _stderr_is_terminal()
        self.t0 = time.monotonic()
        self._console = self._progress = None
        self._tasks: dict[str, int] = {}

    def update(self, label: str, completed: float, total: float | None = None, **fields) -> None:
        """Set the bar `label` (made on first use) to `completed` of `total`; `fields` fill the templates."""
        if not self.enabled or self._progress is None and time.monotonic() - self.t0 <= self.delay:
            return
        if self._progress is None:
            self._start()
        if label in self._tasks:
            self._progress.update(self._tasks[label], completed=completed,
                                  **({} if total is None else {"total": total}), **fields)
        else:
            self._tasks[label] = self._progress.add_task(label, total=total, completed=completed, **fields)

    def remove(self, label: str) -> None:
        if label in self._tasks:
            self._progress.remove_task(self._tasks.pop(label))

    def print(self, msg: str, **options) -> None:
        """A line on stderr, above the bars while they show (options: rich's Console.print)."""
        self._stderr().print(msg, **options)

    def _stderr(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        import rich.progress as rp

        made = [getattr(rp, COLUMNS[c])() if c in COLUMNS else rp.TextColumn(c) for c in self.columns]
        self._progress = rp.Progress(*made, console=self._stderr(), transient=self.transient)
        self._progress.start()
