"""MissingTool: a program this machine lacks, said with its fix in one sentence.

A leaf of grpclab.tools (it imports nothing from grpclab), so that the parts that need an
outside program (the Node client, the private resolver) can raise it while preflight,
which checks them all, imports them.
"""

from __future__ import annotations


class MissingTool(RuntimeError):
    """A program a notebook needs is not installed; the message is the whole fix."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the fix is all a learner needs.
        return [f"{type(self).__name__}: {self}"]

    @classmethod
    def sentence(cls, found: tuple[str, str] | None) -> str | None:
        """A `(what is missing, the fix)` pair as one sentence, or None when nothing is."""
        return f"{found[0]}: {found[1]}" if found else None

    @classmethod
    def check(cls, found: tuple[str, str] | None, needed_for: str) -> None:
        """Raise, saying what `needed_for` needs and the fix, when `found` names a gap."""
        if found:
            raise cls(f"{needed_for} {cls.sentence(found)}.")
