"""A small progress bar for long loops (no dependency): ``for i in progress(range(n), desc="train")``.

``bar.set(loss=0.12)`` shows running values. On a terminal it redraws one line; elsewhere
(CI logs, pipes) it prints about ten lines in all.
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
        self._last_line = -1

    def set(self, **values):
        self.values.update(values)

    def _render(self, final=False):
        if self.disable:
            return
        elapsed = time.perf_counter() - self.start
        vals = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values.items())
        if self.total:
            frac = self.n / self.total
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            line = f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:.1f}s<{eta:.1f}s {vals}"
        else:
            line = f"{self.desc} {self.n} {elapsed:.1f}s {vals}"
        if self.tty:
            self.file.write("\r" + line.ljust(100) + ("\n" if final else ""))
        else:
            step = max(1, (self.total or 10) // 10)
            if final or self.n // step != self._last_line:
                self._last_line = self.n // step
                self.file.write(line + "\n")
        self.file.flush()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
            self._render(final=self.n == self.total)
        if self.total is None:
            self._render(final=True)
