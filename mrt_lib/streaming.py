"""A child process's output, passed on while it runs instead of captured until it ends.

A stage run through DVC prints log lines (ending in ``\\n``) and progress bars (tqdm redraws
its line with ``\\r``). ``stream_lines`` hands every log line to ``emit`` as it arrives and a
progress redraw at most every ``every_s`` seconds (the last one always), so a flow's log shows a
long stage's progress without one record per redraw; it returns the output's tail for an
error message.
"""

from __future__ import annotations

import re
import time
from typing import BinaryIO, Callable

_SPLIT = re.compile(r"(\r\n|\n|\r)")


def stream_lines(stream: BinaryIO, emit: Callable[[str], None], every_s: float = 10.0, tail_chars: int = 3000,
                 clock: Callable[[], float] = time.monotonic) -> str:
    """Read ``stream`` to its end; returns its last ``tail_chars`` characters (decoded as UTF-8,
    bad bytes replaced)."""
    pending, tail = "", ""
    last_progress, progress = float("-inf"), None
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        text = chunk.decode("utf-8", errors="replace")
        tail = (tail + text)[-tail_chars:]
        parts = _SPLIT.split(pending + text)
        pending = parts.pop()  # what follows the last line end: not complete yet
        for piece, end in zip(parts[::2], parts[1::2]):
            if end == "\r":  # a redraw of a progress bar
                progress = piece
                if piece.strip() and clock() - last_progress >= every_s:
                    emit(piece.strip())
                    last_progress, progress = clock(), None
            elif piece.strip():
                emit(piece.rstrip())
                progress = None
    for rest in (progress, pending):  # the last redraw, and a last line without its end
        if rest and rest.strip():
            emit(rest.strip())
    return tail
