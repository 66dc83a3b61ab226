"""stdout and stderr that survive a reader that went away.

``python -m lnl_lightning ... 2>&1 | tee log`` and Ctrl-C: the terminal's SIGINT reaches ``tee``
too, so the run finishes its batch writing into a pipe nobody reads. Every write then raises
``BrokenPipeError``; from the progress bar, that would end the run before it saves its
checkpoint. :func:`survive_broken_pipes` wraps both streams: the first broken write points the
stream's file descriptor at ``/dev/null`` (the idiom Python's documentation gives for SIGPIPE),
so the run goes on silently, saves, and exits with its own status.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class PipeSafeStream:
    """A text stream whose writes and flushes never raise ``BrokenPipeError``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard_from_now_on()
            return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard_from_now_on()

    def _discard_from_now_on(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def survive_broken_pipes() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once); call before logging is configured, so
    that its handlers write through the wrappers too."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, PipeSafeStream):
            setattr(sys, name, PipeSafeStream(stream))
