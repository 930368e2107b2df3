"""Terminal output of the command line client: tables, colours and a progress bar, each only on a TTY."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

_COLOURS = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1"}


def is_tty(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def paint(text: str, colour: str, stream: TextIO = sys.stdout) -> str:
    if not is_tty(stream) or "NO_COLOR" in os.environ:
        return text
    return f"\033[{_COLOURS[colour]}m{text}\033[0m"


def code_text(code: Any, stream: TextIO = sys.stdout) -> str:
    if code in (None, ""):
        return ""
    return paint(str(code), "green" if code == 0 else "red", stream)


def when(epoch: Any) -> str:
    if not isinstance(epoch, int | float) or epoch <= 0:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def seconds(value: Any) -> str:
    return f"{value:.1f}s" if isinstance(value, int | float) else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], stream: TextIO = sys.stdout) -> None:
    """Left-aligned columns, widths from the visible text (colour codes do not count)."""

    def visible(cell: str) -> int:
        out, skip = 0, False
        for ch in cell:
            if ch == "\033":
                skip = True
            elif skip and ch == "m":
                skip = False
            elif not skip:
                out += 1
        return out

    widths = [max([visible(h), *(visible(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [[paint(h, "bold", stream) for h in headers], *rows]
    for row in lines:
        cells = [cell + " " * (widths[i] - visible(cell)) for i, cell in enumerate(row)]
        stream.write("  ".join(cells).rstrip() + "\n")


class ProgressBar:
    """One line redrawn in place on a TTY (stderr, so stdout keeps only the job's output); silent elsewhere."""

    WIDTH = 30

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.on = is_tty(stream)
        self.text = ""

    def show(self, progress: float, state: str) -> None:
        if not self.on:
            return
        done = int(self.WIDTH * min(max(progress, 0.0), 1.0))
        self.text = f"[{'#' * done}{'.' * (self.WIDTH - done)}] {progress * 100:5.1f}% {state}"
        self.stream.write("\r\033[K" + self.text)
        self.stream.flush()

    def clear(self) -> None:
        if self.on and self.text:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def redraw(self) -> None:
        if self.on and self.text:
            self.stream.write(self.text)
            self.stream.flush()

    def done(self) -> None:
        self.clear()
        self.text = ""
