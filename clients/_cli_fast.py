"""The fast path of the ``prontodb`` command: the forms scripts run in loops, parsed without click.

It recognises exactly::

    [--user U] [--cursor C] [--url URL] [--json]   (global options, any order, `--opt=value` too)
    get KEY | set KEY VALUE | del KEY | incr KEY [BY] | decr KEY [BY] | keys [PREFIX] | scan [PREFIX]

and calls the same ``_cli_commands`` function as the click command would. Anything else (help,
command options, usage errors, other commands, an argument that starts with ``-`` and is not a
negative number) returns None and goes to click, so whatever this accepts it reads as click does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import _cli_commands as commands

_VALUE_OPTIONS = {"--user": "user", "--cursor": "cursor", "--url": "url"}


def _positional(arg: str) -> bool:
    return not arg.startswith("-") or commands.is_number(arg)


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` (without the program name) if it is a fast form: its exit status, else None."""
    values: dict[str, str] = {}
    as_json = False
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--json":
            as_json = True
            index += 1
            continue
        name, equals, value = arg.partition("=")
        if name not in _VALUE_OPTIONS:
            break
        if not equals:
            if index + 1 == len(argv) or argv[index + 1].startswith("-"):
                return None  # click reports the missing value (or takes `-x` as one: its call)
            value = argv[index + 1]
            index += 1
        values[_VALUE_OPTIONS[name]] = value
        index += 1
    else:
        return None
    command, args = argv[index], argv[index + 1 :]
    if not all(_positional(arg) for arg in args):
        return None
    options = commands.Globals(json=as_json, **values)
    count = len(args)
    try:
        if command == "get" and count == 1:
            return commands.get(options, args[0])
        if command == "set" and count == 2:
            return commands.set_(options, args[0], args[1])
        if command == "del" and count == 1:
            return commands.delete(options, args[0])
        if command in ("incr", "decr") and count in (1, 2):
            by = commands.parse_int(args[1]) if count == 2 else 1
            if by is None:
                return None
            return commands.incr(options, args[0], by, decrement=command == "decr")
        if command in ("keys", "scan") and count <= 1:
            run_listing = commands.keys if command == "keys" else commands.scan
            return run_listing(options, *args)
    except BrokenPipeError:
        # The reader went away (`prontodb keys | head -1`): stop quietly, as click does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted!\n")  # click's words for the same thing
        return 1
    return None
