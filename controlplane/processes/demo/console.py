"""The demo's output, which never raises.

`make demo | tee demo.log` and Ctrl-C: the terminal's SIGINT kills `tee` too, and the demo's
next print raises BrokenPipeError. A closed terminal (SIGHUP) makes it raise EIO. Before this
module, such a print, made on the way out, killed the demo before it had stopped its children.
So every write here swallows the error, points the file descriptor at /dev/null (so the
interpreter's last flush at exit cannot fail either) and tells the demo its reader is gone:
with nobody reading, it stops as if interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO


class Console:
    def __init__(self, out: TextIO, err: TextIO, *, on_lost: Callable[[], None]) -> None:
        self._out = out
        self._err = err
        self._on_lost = on_lost
        self._lost: set[int] = set()  # id() of the streams that failed

    @property
    def lost(self) -> bool:
        """Nobody reads the output any more."""
        return id(self._out) in self._lost

    def say(self, text: str = "") -> None:
        self.write(text + "\n")

    def write(self, text: str) -> None:
        if not self.lost and not self._emit(self._out, text):
            self._on_lost()

    def warn(self, text: str) -> None:
        self._emit(self._err, text + "\n")

    def is_terminal(self) -> bool:
        try:
            return not self.lost and self._out.isatty()
        except (OSError, ValueError):
            return False

    def _emit(self, stream: TextIO, text: str) -> bool:
        """Write and flush; False (and the stream silenced) if the reader is gone."""
        if id(stream) in self._lost:
            return False
        try:
            stream.write(text)
            stream.flush()
            return True
        except (OSError, ValueError):  # BrokenPipeError, EIO from a hung-up terminal, a closed file
            self._lost.add(id(stream))
            _silence(stream)
            return False


def _silence(stream: TextIO) -> None:
    """Point the stream's file descriptor at /dev/null; what is still buffered goes there."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)
