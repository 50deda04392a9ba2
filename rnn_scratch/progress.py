"""A small progress bar for long loops (no dependency)::

    with progress(range(n), desc="train") as bar:
        for i in bar:
            ...
            bar.set(loss=0.12)

On a terminal it redraws one line and ends it when the loop ends, breaks or raises (the context
manager, or :meth:`progress.close`). When the output is not a terminal (CI logs, pipes, notebooks'
captured streams) it stays quiet and writes one final line when it closes.
"""

from __future__ import annotations

import sys
import time


class progress:
    def __init__(self, iterable, total=None, desc="", file=None, width=28, disable=False):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.width, self.disable = desc, width, disable
        self.file = file or sys.stderr
        self.values: dict = {}
        self.n = 0
        self.start = time.perf_counter()
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.closed = False

    def set(self, **values):
        """Show running values (e.g. the loss) beside the bar."""
        self.values.update(values)

    def _line(self):
        elapsed = time.perf_counter() - self.start
        vals = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values.items())
        if self.total:
            filled = int(self.n / self.total * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            return f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:.1f}s<{eta:.1f}s {vals}".rstrip()
        return f"{self.desc} {self.n} {elapsed:.1f}s {vals}".rstrip()

    def _redraw(self):
        if not self.disable and self.tty:
            self.file.write("\r" + self._line().ljust(100))
            self.file.flush()

    def close(self):
        """End the bar: finish the terminal line, or write the one final line elsewhere. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        self.file.write(("\r" + self._line().ljust(100) + "\n") if self.tty else self._line() + "\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.n += 1
                self._redraw()
        finally:  # the loop ended, broke (the generator is closed) or raised
            self.close()
