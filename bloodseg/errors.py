"""The one exception type bloodseg raises for bad input; the CLIs print it without a traceback."""

from __future__ import annotations


class BloodsegError(ValueError):
    """A problem with the user's data, config or files: the message names it and says how to fix it."""
