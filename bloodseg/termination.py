"""Termination signals (SIGTERM from a scheduler, ``kill``): stop like Ctrl-C and exit with ``128 + signal``.

Python's default for SIGTERM kills the process on the spot, and Lightning's own handler ends training
with exit status 0, so a killed run would look finished. Inside :func:`termination_raises`, the
signal raises :class:`Terminated` in the main thread instead: every command then keeps what it completed,
says so in one line and ends with 143 (SIGTERM), as shells and schedulers report a killed job.

A handler that another program installed first is left alone: submitit, for example, ignores SIGTERM on
purpose so that its own SIGUSR2 handler can checkpoint and requeue the job. Training then stops at
Lightning's next batch boundary (Lightning raises its ``SIGTERMException``), which counts the same.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

TERMINATION_SIGNALS = (signal.SIGTERM,)


class Terminated(BaseException):
    """The process received a termination signal; raised in the main thread by the signal handler.

    A BaseException, as KeyboardInterrupt is, so that ``except Exception`` blocks do not swallow it.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.signal_name}")


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (main thread only), unless a handler other
    than Python's default is installed (a scheduler's runtime, such as submitit, that handles it itself);
    the handler before the block is restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in TERMINATION_SIGNALS}
    for signum, handler in saved.items():
        if handler is signal.SIG_DFL:
            signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def stopped_by(error: BaseException) -> str | None:
    """What stopped the process when ``error`` is an interruption: ``Ctrl-C``, or the signal's name for
    :class:`Terminated` and Lightning's ``SIGTERMException`` (raised at a batch boundary after SIGTERM);
    None for anything else."""
    if isinstance(error, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(error, Terminated):
        return error.signal_name
    if isinstance(error, SIGTERMException):
        return "SIGTERM"
    return None


def exit_status_of(error: BaseException) -> int | None:
    """The exit status of a command stopped by ``error``: 128 + the signal's number (143 for SIGTERM, 130
    for Ctrl-C), as shells and schedulers report a killed process; None when ``error`` is no interruption."""
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(error, Terminated):
        return error.exit_code
    if isinstance(error, SIGTERMException):
        return 128 + signal.SIGTERM
    return None
