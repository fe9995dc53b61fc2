"""The demo's output never raises: a reader that went away only silences it and ends the run."""

from __future__ import annotations

import io
import os
import sys

from controlplane.processes.demo.console import Console


def test_a_broken_pipe_silences_the_output_and_reports_it_once() -> None:
    read_end, write_end = os.pipe()
    out = io.TextIOWrapper(io.FileIO(write_end, "w"), line_buffering=False)
    lost: list[str] = []
    console = Console(out, sys.stderr, on_lost=lambda: lost.append("lost"))
    console.say("before")
    assert os.read(read_end, 100) == b"before\n"
    os.close(read_end)  # `tee` died
    console.say("after")  # EPIPE: swallowed
    console.write("\x1b[H table")
    assert console.lost and lost == ["lost"]
    # The descriptor now points at /dev/null, so the last flush at exit cannot fail either.
    out.write("buffered at exit\n")
    out.flush()
    assert os.path.samefile(f"/proc/self/fd/{write_end}", os.devnull)
    out.close()


def test_a_closed_stream_is_swallowed_too() -> None:
    out = io.StringIO()
    out.close()
    lost: list[bool] = []
    console = Console(out, out, on_lost=lambda: lost.append(True))
    console.say("x")
    console.warn("y")
    assert lost == [True] and not console.is_terminal()
