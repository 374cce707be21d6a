"""Build progress: tensors and bytes done, reported to a sink; a text bar on stderr for the CLI."""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

__all__ = ["NullProgress", "Progress", "TextProgress"]


class Progress(Protocol):
    def start(self, *, tensors: int, nbytes: int) -> None: ...

    def advance(self, *, tensors: int, nbytes: int) -> None: ...

    def phase(self, text: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, *, tensors: int, nbytes: int) -> None:
        pass

    def advance(self, *, tensors: int, nbytes: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class TextProgress:
    """``[#####.....] 12/340 tensors  1.2 GB/3.4 GB`` redrawn in place (one line per update when not a tty)."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self._stream = stream or sys.stderr
        self._width = width
        self._total = (0, 0)
        self._done = [0, 0]
        self._last_fill = -1
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def start(self, *, tensors: int, nbytes: int) -> None:
        self._total = (tensors, nbytes)
        self._done = [0, 0]
        self._draw(force=True)

    def advance(self, *, tensors: int, nbytes: int) -> None:
        self._done[0] += tensors
        self._done[1] += nbytes
        self._draw()

    def phase(self, text: str) -> None:
        self._stream.write(("\n" if self._tty else "") + text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        self._draw(force=True)
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()

    def _draw(self, force: bool = False) -> None:
        tensors, nbytes = self._total
        frac = min(self._done[1] / nbytes, 1.0) if nbytes else 1.0
        fill = int(frac * self._width)
        # Off a terminal, print only when the bar grows, so logs stay short.
        if not force and not self._tty and fill == self._last_fill:
            return
        self._last_fill = fill
        bar = "#" * fill + "." * (self._width - fill)
        line = f"[{bar}] {self._done[0]}/{tensors} tensors  {_size(self._done[1])}/{_size(nbytes)}"
        self._stream.write(("\r" + line) if self._tty else line + "\n")
        self._stream.flush()
