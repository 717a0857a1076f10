"""The one exception type bloodseg raises for bad input; the CLIs print it without a traceback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class BloodsegError(ValueError):
    """A problem with the user's data, config or files: the message names it and says how to fix it."""


@contextlib.contextmanager
def exit_2_on_user_error(log: logging.Logger) -> Iterator[None]:
    """In an entry point: a BloodsegError raised inside the block is logged as one line on ``log``
    and ends the process with exit status 2, without a traceback."""
    try:
        yield
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(2) from None
