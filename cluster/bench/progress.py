"""The progress line on stderr: which cell runs, and how far it is. One line per cell when not a TTY."""

from __future__ import annotations

import sys
from typing import TextIO

BAR_WIDTH = 24


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    done = round(min(max(fraction, 0.0), 1.0) * width)
    return "#" * done + "." * (width - done)


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.index = 0
        self.label = ""
        self._open = False

    def message(self, text: str) -> None:
        """A line of its own (the progress line, if any, is redrawn below it)."""
        self._clear()
        print(text, file=self.stream, flush=True)

    def cell(self, label: str) -> None:
        self.index += 1
        self.label = label
        if not self.tty:
            print(f"[{self.index:>3}/{self.total}] {label}", file=self.stream, flush=True)

    def update(self, elapsed: float, total: float, stage: str = "") -> None:
        if not self.tty:
            return
        text = f"[{self.index:>3}/{self.total}] {self.label:<28} [{bar(elapsed / total if total else 1)}] "
        text += f"{elapsed:5.1f}/{total:.1f}s {stage}"
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._open = True

    def done(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._open:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._open = False
