"""Notes for the learner: what the library says while it works, shown in the cell's output.

The library does not print. A note is a `logging` record on the logger "grpclab.notes",
whose one handler writes it to the *current* sys.stdout (a notebook kernel swaps that
stream per cell), so that it shows in the cell as it happens, in the same stream as the
cell's own output, never as a red stderr block. To silence or redirect the notes, configure
that logger as any other (`logging.getLogger("grpclab.notes").setLevel(logging.WARNING)`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

LOGGER = "grpclab.notes"


class _CurrentStdout(logging.StreamHandler):
    """A StreamHandler whose stream is whatever sys.stdout is when a note is written."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # StreamHandler.__init__ sets it; the stream is always the current stdout


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a learner note is not an application log line
    return logger


_LOG = _logger()


def say(text: object) -> None:
    """One note for the learner (any object, as print would show it)."""
    _LOG.info("%s", text)
