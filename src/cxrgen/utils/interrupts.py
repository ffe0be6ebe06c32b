"""Signals as exceptions, so that SIGTERM and Ctrl-C end a command like an error: cleaned up, named, non-zero.

Python's default SIGTERM ends the process on the spot (pool workers, the forkserver and the resource tracker are
orphaned), and Lightning turns SIGTERM into a ``SystemExit`` with status 0, which reads as success. Here both
SIGTERM and SIGINT raise :class:`Interrupted` in the main thread: ``finally`` blocks and context managers run
(process pools terminate their workers, temporary files are removed), the code that knows the context (e.g. which
run stopped at which epoch) adds it, and the command exits with the shell's convention, 128 + signal number
(143 for SIGTERM, 130 for SIGINT).

``Interrupted`` derives from ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` swallows it.
"""

from __future__ import annotations

import signal
from types import FrameType

#: The signals turned into :class:`Interrupted`: what supervisors, SLURM and ``timeout`` send, and Ctrl-C.
HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal stopped the command before it finished; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        super().__init__(message or f"stopped by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    # A second signal of the same kind while cleaning up acts as the default would (ends the process at once).
    signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
    raise Interrupted(signum)


def raise_on_signals() -> None:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` in the main thread (call once, from the command)."""
    for signum in HANDLED:
        signal.signal(signum, _raise)


def as_interrupted(exc: BaseException) -> Interrupted | None:
    """The :class:`Interrupted` that ``exc`` stands for, or None when it is no interruption.

    ``KeyboardInterrupt`` (a SIGINT that came before :func:`raise_on_signals`) counts as SIGINT.
    """
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(signal.SIGINT)
    return None
