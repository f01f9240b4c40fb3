"""Progress reporting: a rich bar on a terminal, plain log lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
_console = Console(stderr=True)


def log(message: str, *, quiet: bool = False) -> None:
    """One status line on stderr (stdout is kept for --json output)."""
    if not quiet:
        _console.print(message, highlight=False, markup=False, soft_wrap=True)


class Reporter:
    """Counts work in named tasks. On a terminal a live rich bar; elsewhere one line every `every` seconds."""

    def __init__(self, *, quiet: bool = False, every: float = 10.0):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.every = every
        self._progress: Progress | None = None

    def __enter__(self) -> "Reporter":
        if not self.quiet and self.tty:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=_console, transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def track(self, items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
        """Iterate over `items`, reporting progress; `set_info` adds a short status (loss, speed)."""
        self._info = ""
        if self.quiet:
            yield from items
            return
        if self._progress is not None:
            task = self._progress.add_task(description, total=total, info="")
            for item in items:
                yield item
                self._progress.update(task, advance=1, info=self._info)
            return
        start = last = time.monotonic()
        done = 0
        for item in items:
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= self.every or done == total:
                rate = done / max(now - start, 1e-9)
                of = f"/{total}" if total else ""
                extra = f" {self._info}" if self._info else ""
                log(f"{description}: {done}{of} ({rate:.1f}/s){extra}")
                last = now

    def set_info(self, info: str) -> None:
        self._info = info
