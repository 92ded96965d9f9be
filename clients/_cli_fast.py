"""The fast path of the ``prontodb`` command: the forms scripts run in loops, parsed without click.

It recognises exactly::

    [--user U] [--cursor C] [--url URL] [--json]   (global options, any order, `--opt=value` too)
    get KEY | set KEY VALUE | del KEY | incr KEY [BY] | decr KEY [BY] | keys [PREFIX] | scan [PREFIX]
    claim PREFIX [--wait S] [--lease S] [--max-deliveries N] | ack KEY --token T
    release KEY --token T [--delay S]     (their options in any order, `--opt=value` too, --json)

and calls the same ``_cli_commands`` function as the click command would. Anything else (help,
command options, usage errors, other commands, an argument that starts with ``-`` and is not a
negative number) returns None and goes to click, so whatever this accepts it reads as click does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from . import _cli_commands as commands

TYPE_CHECKING = False  # no typing import at run time: the CLI imports this on every start
if TYPE_CHECKING:
    from typing import Any


def _seconds(text: str) -> float | None:
    return commands.parse_seconds(text)


def _seconds_or_zero(text: str) -> float | None:
    return commands.parse_seconds(text, allow_zero=True)


def _token(text: str) -> int | None:
    number = commands.parse_int(text)
    return number if number is not None and number >= 0 else None


def _deliveries(text: str) -> int | None:
    number = commands.parse_int(text)
    return number if number is not None and number >= 1 else None


# Each queue command's options: option -> (keyword, parser), the parsers as click's callbacks.
_QUEUE_OPTIONS: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "claim": {
        "--wait": ("wait", _seconds_or_zero),
        "--lease": ("lease", _seconds),
        "--max-deliveries": ("max_deliveries", _deliveries),
    },
    "ack": {"--token": ("token", _token)},
    "release": {"--token": ("token", _token), "--delay": ("delay", _seconds_or_zero)},
}


def _queue_options(
    known: dict[str, tuple[str, Callable[[str], Any]]], args: Sequence[str]
) -> tuple[list[str], dict[str, Any]] | None:
    """Split a queue command's ``args`` into its positionals and its parsed options (``json``
    for its own --json); None for anything click should see (an unknown option, a bad value)."""
    positionals: list[str] = []
    parsed: dict[str, Any] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--json":
            parsed["json"] = True
            continue
        name, equals, text = arg.partition("=")
        if name not in known:
            positionals.append(arg)  # checked by the caller: an option-like one goes to click
            continue
        if not equals:
            if index == len(args):
                return None
            text = args[index]
            index += 1
        keyword, parse = known[name]
        value = parse(text)
        if value is None:
            return None  # click says what is wrong with it
        parsed[keyword] = value
    return positionals, parsed


def _positional(arg: str) -> bool:
    return not arg.startswith("-") or commands.is_number(arg)


def _global_options(argv: Sequence[str]) -> tuple[dict[str, str], bool, int] | None:
    """The global options before the command: their values, --json, and the command's index;
    None when click should see them (a missing value, no command at all)."""
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
        if name not in commands.GLOBAL_VALUE_OPTIONS:
            return values, as_json, index
        if not equals:
            if index + 1 == len(argv) or argv[index + 1].startswith("-"):
                return None  # click reports the missing value (or takes `-x` as one: its call)
            value = argv[index + 1]
            index += 1
        values[commands.GLOBAL_VALUE_OPTIONS[name]] = value
        index += 1
    return None


def _claim(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.claim(options, args[0], **queue) if len(args) == 1 else None


def _ack(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    if len(args) != 1 or "token" not in queue:
        return None
    return commands.ack(options, args[0], queue["token"])


def _release(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    if len(args) != 1 or "token" not in queue:
        return None
    return commands.release(options, args[0], queue["token"], queue.get("delay"))


def _get(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.get(options, args[0]) if len(args) == 1 else None


def _set(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.set_(options, args[0], args[1]) if len(args) == 2 else None


def _delete(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.delete(options, args[0]) if len(args) == 1 else None


def _counter(options: commands.Globals, args: Sequence[str], decrement: bool) -> int | None:
    if len(args) not in (1, 2):
        return None
    by = commands.parse_int(args[1]) if len(args) == 2 else 1
    if by is None:
        return None
    return commands.incr(options, args[0], by, decrement=decrement)


def _incr(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return _counter(options, args, decrement=False)


def _decr(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return _counter(options, args, decrement=True)


def _keys(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.keys(options, *args) if len(args) <= 1 else None


def _scan(options: commands.Globals, args: Sequence[str], queue: dict[str, Any]) -> int | None:
    return commands.scan(options, *args) if len(args) <= 1 else None


# Each fast command's form: (global options, positionals, parsed queue options) -> its exit status,
# or None when the arguments are not that form (one missing or too many: click says so).
_FORMS: dict[str, Callable[[commands.Globals, Sequence[str], dict[str, Any]], int | None]] = {
    "claim": _claim,
    "ack": _ack,
    "release": _release,
    "get": _get,
    "set": _set,
    "del": _delete,
    "incr": _incr,
    "decr": _decr,
    "keys": _keys,
    "scan": _scan,
}


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` (without the program name) if it is a fast form: its exit status, else None."""
    found = _global_options(argv)
    if found is None:
        return None
    values, as_json, index = found
    command, args = argv[index], argv[index + 1 :]
    form = _FORMS.get(command)
    if form is None:
        return None
    queue_options: dict[str, Any] = {}
    if command in _QUEUE_OPTIONS:  # a worker's loop: claim, then ack or release
        parsed = _queue_options(_QUEUE_OPTIONS[command], args)
        if parsed is None:
            return None
        args, queue_options = parsed
        as_json = as_json or queue_options.pop("json", False)
    if not all(_positional(arg) for arg in args):
        return None
    options = commands.Globals(json=as_json, **values)
    try:
        return form(options, args, queue_options)
    except BrokenPipeError:
        # The reader went away (`prontodb keys | head -1`): stop quietly, as click does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{commands.INTERRUPTED}\n")  # as the click group says it
        return commands.EXIT_INTERRUPTED
