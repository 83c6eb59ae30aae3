"""Learner notes while the kube backend waits: add-on output, slow rollouts, Job starts."""

from __future__ import annotations

import time
from collections.abc import Callable

from grpclab.notes import say

# Notes the kube backend gives while it waits (add-on output, slow rollouts, Job starts)
# start with this, so that they are easy to tell from a cell's own output.
NOTE_PREFIX = "[kube] "


def note(text: str) -> None:
    """A learner note (grpclab.notes: the cell's output, as it happens), with NOTE_PREFIX."""
    say(f"{NOTE_PREFIX}{text}")


class Waiting:
    """Says what a wait is waiting for, once it has lasted `after_s`; quiet for short waits.

    `update(state)` says "<what>: <state> (<n> s)" when the state changes or `every_s`
    has passed since the last line; `finish(state)` says a last line only if any was said.
    """

    def __init__(
        self,
        what: str,
        after_s: float = 5.0,
        every_s: float = 15.0,
        say: Callable[[str], None] = note,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.after_s, self.every_s = what, after_s, every_s
        self._say, self._clock = say, clock
        self._start = clock()
        self._last_state: str | None = None
        self._last_said: float | None = None

    def elapsed(self) -> float:
        return self._clock() - self._start

    def update(self, state: str) -> None:
        now, elapsed = self._clock(), self.elapsed()
        if elapsed < self.after_s:
            self._last_state = state
            return
        changed = state != self._last_state or self._last_said is None
        if changed or now - (self._last_said or now) >= self.every_s:
            self._say(f"{self.what}: {state} ({elapsed:.0f} s)")
            self._last_said = now
        self._last_state = state

    def finish(self, state: str) -> None:
        if self._last_said is not None:
            self._say(f"{self.what}: {state} after {self.elapsed():.0f} s")
