"""One argument style across the tools: ``key=value``, as Hydra's, also for the argparse-based folder tools."""

from __future__ import annotations

from collections.abc import Iterable


def key_value_options(argv: list[str], options: Iterable[str]) -> list[str]:
    """argv with ``key=value`` turned into ``--key value`` for the given option names.

    So ``bloodseg-aggregate DIR out=results.json`` reads as ``--out results.json``; the ``--key``
    form keeps working, and other arguments (folders) pass through unchanged.
    """
    names = set(options)
    converted = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        converted += [f"--{key}", value] if eq and key in names else [arg]
    return converted
