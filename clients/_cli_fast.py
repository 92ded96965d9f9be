"""The fast path of the ``prontodb`` command: the common forms, parsed without click.

Importing click costs a command about 20 ms, more than the rest of its start-up together; a script
that calls ``prontodb`` in a loop pays it every time. So the commands scripts run most are
recognised here::

    [--user U] [--cursor C] [--url URL] [--json]   (global options, any order, `--opt=value` too)
    get KEY [--meta] | set KEY VALUE [--string] [--if-absent] [--if-rev N] [--ttl S] [--session ID]
    del KEY... | exists KEY | mget KEY... | mset [--string] KEY VALUE...
    incr KEY [BY] | decr KEY [BY] | keys [PREFIX] | scan [PREFIX] | cas KEY OLD NEW [--string]
    expire KEY S | persist KEY | ttl KEY | caches | claims [PREFIX] | ping | status
    claim PREFIX [--wait S] [--lease S] [--max-deliveries N] | ack KEY --token T
    release KEY --token T [--delay S] | extend KEY --token T --lease S | unlock NAME --token T

(a command's options anywhere among its arguments, `--opt=value` too, --json and the global
value options after it as well), and each calls the same ``_cli_commands`` function as its click
command. Anything else (help, usage errors, values from stdin or a file, other commands, an
argument that starts with ``-`` and is not a negative number) returns None and goes to click, so
whatever this accepts it reads as click does: tests/test_cli_parity.py runs each form both ways.
"""

from __future__ import annotations

import os
import sys

from . import _cli_commands as commands

TYPE_CHECKING = False  # no typing (nor collections) import at run time: every start imports this
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def _seconds(text: str) -> float | None:
    return commands.parse_seconds(text)


def _seconds_or_zero(text: str) -> float | None:
    return commands.parse_seconds(text, allow_zero=True)


def _whole(text: str) -> int | None:
    number = commands.parse_int(text)
    return number if number is not None and number >= 0 else None


def _deliveries(text: str) -> int | None:
    number = commands.parse_int(text)
    return number if number is not None and number >= 1 else None


FLAG = None  # an option that takes no value
if TYPE_CHECKING:
    Options = dict[str, tuple[str, Callable[[str], Any] | None]]
_STRING: Options = {"--string": ("as_string", FLAG)}
_TOKEN: Options = {"--token": ("token", _whole)}

# Each command's own options: option -> (keyword, parser or FLAG), the parsers as click's callbacks.
# A command not named here takes none (but --json, as every command does).
_OPTIONS: dict[str, Options] = {
    "get": {"--meta": ("meta", FLAG)},
    "set": {
        **_STRING,
        "--if-absent": ("if_absent", FLAG),
        "--if-rev": ("if_rev", _whole),
        "--ttl": ("ttl", _seconds),
        "--session": ("session", _whole),
        "--fence": ("fence", commands.parse_fence),
        "--priority": ("priority", _whole),
        "--delay": ("delay", commands.parse_duration),
        "--at": ("at", commands.parse_time),
        "--after": ("after", commands.parse_keys),
    },
    "mset": _STRING,
    "cas": _STRING,
    "claim": {
        "--wait": ("wait", _seconds_or_zero),
        "--lease": ("lease", _seconds),
        "--max-deliveries": ("max_deliveries", _deliveries),
    },
    "ack": _TOKEN,
    "release": {
        **_TOKEN,
        "--delay": ("delay", _seconds_or_zero),
        "--priority": ("priority", _whole),
    },
    "extend": {**_TOKEN, "--lease": ("lease", _seconds)},
    "unlock": _TOKEN,
}


# The global value options work after the command too, as click's group takes them there.
_AFTER: Options = {name: (kw, str) for name, kw in commands.GLOBAL_VALUE_OPTIONS.items()}


class _Split:
    """A command's arguments taken apart as click takes them: positionals, its own options,
    the global options given after it, and whether --json was."""

    __slots__ = ("globals", "json", "options", "positionals")

    def __init__(self) -> None:
        self.positionals: list[str] = []
        self.options: dict[str, Any] = {}
        self.globals: dict[str, str] = {}
        self.json = False


def _split(known: Options, args: Sequence[str]) -> _Split | None:
    """``args`` taken apart; None for anything click should see (an unknown option, a missing or
    bad value, a value given to a flag, ``--``)."""
    split = _Split()
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if _positional(arg):
            split.positionals.append(arg)
            continue
        if arg == "--json":
            split.json = True
            continue
        name, equals, text = arg.partition("=")
        spec = known.get(name) or _AFTER.get(name)
        if spec is None:
            return None
        keyword, parse = spec
        if parse is FLAG:
            if equals:
                return None  # click: the option does not take a value
            split.options[keyword] = True
            continue
        if not equals:
            if index == len(args):
                return None
            text = args[index]
            index += 1
        value = parse(text)
        if value is None:
            return None  # click says what is wrong with it
        (split.options if name in known else split.globals)[keyword] = value
    return split


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


# Each fast command's forms: (global options, positionals, its parsed options) -> its exit status,
# or None when the arguments are not its form (one missing, or too many: click says so). The
# arguments' counts are click's; each calls what the click command calls.
if TYPE_CHECKING:
    Form = Callable[[commands.Globals, Sequence[str], dict[str, Any]], int | None]


def _one(call: Callable[..., int]) -> Form:
    """A command of exactly one argument (and its options)."""
    return lambda o, args, kw: call(o, args[0], **kw) if len(args) == 1 else None


def _optional(call: Callable[..., int]) -> Form:
    """A command of one optional argument (a prefix)."""
    return lambda o, args, kw: call(o, *args, **kw) if len(args) <= 1 else None


def _none(call: Callable[..., int]) -> Form:
    """A command of no arguments."""
    return lambda o, args, kw: call(o) if not args else None


def _set(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
    return commands.set_(o, args[0], args[1], **kw) if len(args) == 2 else None


def _mset(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
    return commands.mset(o, args, **kw) if args and len(args) % 2 == 0 else None


def _cas(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
    return commands.cas(o, *args, **kw) if len(args) == 3 else None


def _expire(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
    if len(args) != 2:
        return None
    seconds = commands.parse_seconds(args[1], allow_zero=True)
    return None if seconds is None else commands.expire(o, args[0], seconds)


def _counter(decrement: bool) -> Form:
    def form(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
        if len(args) not in (1, 2):
            return None
        by = commands.parse_int(args[1]) if len(args) == 2 else 1
        if by is None:
            return None
        return commands.incr(o, args[0], by, decrement=decrement)

    return form


def _with_token(call: Callable[..., int], *required: str) -> Form:
    """A claim's follow-up (ack, release, extend): one key, and its --token (and ``required``)."""

    def form(o: commands.Globals, args: Sequence[str], kw: dict[str, Any]) -> int | None:
        if len(args) != 1 or any(name not in kw for name in ("token", *required)):
            return None
        return call(o, args[0], **kw)

    return form


def _unlock(o: commands.Globals, name: str, token: int) -> int:
    from . import _cli_recipes  # only for unlock: the other recipes' commands are click's

    return _cli_recipes.unlock(o, name, token)


_FORMS: dict[str, Form] = {
    "get": _one(commands.get),
    "set": _set,
    "del": lambda o, args, kw: commands.delete(o, *args) if args else None,
    "exists": _one(commands.exists),
    "mget": lambda o, args, kw: commands.mget(o, args) if args else None,
    "mset": _mset,
    "incr": _counter(decrement=False),
    "decr": _counter(decrement=True),
    "keys": _optional(commands.keys),
    "scan": _optional(commands.scan),
    "cas": _cas,
    "expire": _expire,
    "persist": _one(commands.persist),
    "ttl": _one(commands.ttl),
    "caches": _none(commands.caches),
    "claim": _one(commands.claim),
    "ack": _with_token(commands.ack),
    "release": _with_token(commands.release),
    "extend": _with_token(commands.extend, "lease"),
    "unlock": _with_token(_unlock),
    "claims": _optional(commands.claims),
    "ping": _none(commands.ping),
    "status": _none(commands.status),
}


def run(argv: Sequence[str]) -> int | None:
    """Run ``argv`` (without the program name) if it is a fast form: its exit status, else None."""
    found = _global_options(argv)
    if found is None:
        return None
    values, as_json, index = found
    command = argv[index]
    form = _FORMS.get(command)
    if form is None:
        return None
    split = _split(_OPTIONS.get(command, {}), argv[index + 1 :])
    if split is None:
        return None
    options = commands.Globals(json=as_json or split.json, **{**values, **split.globals})
    options.wire = True
    try:
        return form(options, split.positionals, split.options)
    except BrokenPipeError:
        # The reader went away (`prontodb keys | head -1`): stop quietly, as click does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{commands.INTERRUPTED}\n")  # as the click group says it
        return commands.EXIT_INTERRUPTED
