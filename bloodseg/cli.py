"""What every command shares: ``key=value`` arguments, checks of the command line and of the folders
it writes into, and ending on a user error or an interruption with one line (no traceback).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from bloodseg.errors import BloodsegError
from bloodseg.termination import exit_status_of, stopped_by, termination_raises

# Hydra settings of a folder Hydra would keep for the job; evaluate, predict, export, suggest and bench
# keep none (their outputs go where their own output key points), so these would only leave decoys
UNUSED_HYDRA_KEYS = ("hydra.run", "hydra.sweep", "hydra.output_subdir", "hydra.job.chdir")


@contextlib.contextmanager
def exit_2_on_user_error(log: logging.Logger) -> Iterator[None]:
    """In an entry point: a BloodsegError raised inside the block is logged as one line on ``log``
    and ends the process with exit status 2 (or the error's ``exit_code``), without a traceback. Ctrl-C or SIGTERM (which the block
    turns into an exception) is logged as one line and ends the process with 128 + the signal's number
    (130, 143); the tools write their results last, so a stopped one leaves none that look complete."""
    try:
        with termination_raises():
            yield
    except BloodsegError as error:
        log.error("%s", error)
        raise SystemExit(getattr(error, "exit_code", 2)) from None
    except BaseException as error:
        status = exit_status_of(error)
        if status is None:
            raise
        log.error("interrupted (%s): nothing more was written", stopped_by(error))
        raise SystemExit(status) from None


def _overrides(argv: list[str]) -> list[str] | None:
    """The ``key=value`` overrides of a Hydra command line (flags such as --cfg job set aside); None when
    Hydra's own parser rejects the flags (Hydra then says why)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        return list(parser.parse_args(argv).overrides)
    except (Exception, SystemExit):
        return None


def command_line_error(argv: list[str], tool: str, output_key: str | None) -> str | None:
    """Why Hydra cannot run this command line, in one line with the fix; None when it can.

    An argument that is not ``key=value`` or holds a character Hydra's grammar refuses unquoted (a space,
    ``ä``, parentheses): quote the value. For ``tool`` other than train (``output_key`` set, or "" for a
    tool that writes no folder): ``hydra.run.dir`` and the other folder settings Hydra would only create
    empty.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = _overrides(argv)
    if overrides is None:
        return None
    parser = OverridesParser.create()
    for i, token in enumerate(overrides):
        try:
            key = parser.parse_override(token).key_or_group
        except Exception:  # noqa: BLE001 - Hydra's grammar errors: one line instead of its report
            previous = overrides[i - 1] if i else ""
            if "=" not in token and "=" in previous:  # `input=my smears/`: the shell split one value
                name, _, value = previous.partition("=")
                return (
                    f"argument {token!r} is not key=value; if it belongs to the value before it, quote the "
                    f"whole value (a value with a space must be quoted): {name}='{value} {token}'"
                )
            name, eq, value = token.partition("=")
            if not eq:
                return f"argument {token!r} is not key=value; fix: give it as key=value (e.g. input=PATH)"
            return (
                f"{token!r}: the value holds a character Hydra reads as syntax (a space, a non-ASCII letter, "
                f"brackets or parentheses); fix: quote it: {name}='{value}'"
            )
        unused = key.lstrip("+~").startswith(UNUSED_HYDRA_KEYS)
        if output_key is not None and unused:
            if not output_key:
                return f"{key} is not used by {tool}: it writes no folder (its results go to stdout); fix: drop it"
            return f"{key} is not used by {tool} (Hydra keeps no folder for it); fix: give {output_key}=... instead"
    return None


def check_command_line(argv: list[str], tool: str, output_key: str | None = None) -> None:
    """Exit with status 2 and one line (see :func:`command_line_error`) before Hydra reads ``argv``."""
    error = command_line_error(argv, tool, output_key)
    if error is not None:
        print(f"bloodseg.{tool}: error: {error}", file=sys.stderr)
        raise SystemExit(2)


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


def check_output_dir(path: str | Path, key: str = "output_dir") -> Path:
    """Fail naming ``key`` when the folder is a file, or cannot be written or created; creates nothing.

    A folder that does not exist yet is checked through its nearest existing parent, so a command
    whose later checks fail leaves no empty folder behind.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BloodsegError(f"{key}={path} is a file, not a folder; fix: give a folder path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BloodsegError(f"{key}={path} cannot be created: {existing} is a file; fix: give a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BloodsegError(f"{key}={path} is not writable ({existing}); fix: give a writable folder")
    return path


def refuse_overwrite(results: Path, key: str = "output_dir") -> None:
    """Fail when ``results`` (e.g. metrics.json) already exists, instead of silently replacing it."""
    if results.exists():
        raise BloodsegError(
            f"{key}={results.parent} already holds {results.name} of an earlier evaluation; "
            "fix: choose another output_dir, or add overwrite=true to replace it"
        )
