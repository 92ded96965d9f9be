"""``prontodb batch``: one command a line from stdin, pipelined on one connection, one answer a
line in order (docs/CLI.md, "Batches").

A line is the CLI's own syntax, split as a shell splits it (quotes, backslashes; no variables);
blank lines and lines starting with ``#`` are skipped. Each line becomes one request: the commands
that read or write keys and queue items, parsed by the fast path's tables, so a line means what the
same command means on its own. ``--atomic`` sends the lines as one transaction instead.
"""

from __future__ import annotations

import shlex
import sys

from . import _cli_fast as fast
from ._cli_commands import (
    Globals,
    parse_int,
    parse_seconds,
    render,
    run,
    say,
    stored_value,
    to_json,
    write,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from ._sync.client import Client

    Printer = Callable[[Any], str]
    Built = tuple[str, dict[str, Any], Printer]

MAX_LINES = 1_000_000  # lines one batch reads; a longer input is refused before anything is sent
NIL = "(nil)"  # a missing key's answer, as redis-cli prints it
_PLAIN = frozenset("'\"\\")  # a line without these splits at whitespace as a shell splits it


def _ok(result: Any) -> str:
    return "OK"


def _value(result: Any) -> str:
    return NIL if result is None else render(result).decode("utf-8", "replace")


def _flag(result: Any) -> str:
    return "1" if result else "0"


def _number(result: Any) -> str:
    return str(result)


def _ttl(result: Any) -> str:
    if not result["exists"]:
        return NIL
    return "-1" if result["ttl"] is None else f"{result['ttl']:.3f}"


def _claimed(result: Any) -> str:
    if result is None:
        return NIL
    return f"{result['key']}={_value(result['value'])} token={result['token']}"


def _set_args(key: str, value: str, kw: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "key": key,
        "value": stored_value(value, as_string=kw.pop("as_string", False)),
    }
    fence = kw.pop("fence", None)
    if fence is not None:
        args["fence"] = {"name": fence[0], "token": fence[1]}
    args.update(kw)
    return args


def _build(command: str, positionals: list[str], kw: dict[str, Any]) -> Built | None:
    """The request of one line and how its answer prints; None if it is not a batch form."""
    n = len(positionals)
    if command == "get" and n == 1 and not kw:
        return "get", {"key": positionals[0]}, _value
    if command == "set" and n == 2:
        return "set", _set_args(positionals[0], positionals[1], kw), _ok
    if command == "del" and n == 1:
        return "del", {"key": positionals[0]}, _flag
    if command == "exists" and n == 1:
        return "exists", {"key": positionals[0]}, _flag
    if command in ("incr", "decr") and n in (1, 2):
        by = parse_int(positionals[1]) if n == 2 else 1
        return None if by is None else (command, {"key": positionals[0], "by": by}, _number)
    if command == "cas" and n == 3:
        old = stored_value(positionals[1], as_string=kw.get("as_string", False))
        args = _set_args(positionals[0], positionals[2], kw) | {"if_value": old}
        return "set", args, _ok
    if command in ("expire", "persist", "ttl"):
        return _timed(command, positionals)
    if command == "claim" and n == 1:
        return "claim", {"prefix": positionals[0], **kw}, _claimed
    if command in ("ack", "release", "extend") and n == 1 and "token" in kw:
        return command, {"key": positionals[0], **kw}, _number if command == "extend" else _ok
    return None


def _timed(command: str, positionals: list[str]) -> Built | None:
    if command == "expire" and len(positionals) == 2:
        seconds = parse_seconds(positionals[1], allow_zero=True)
        return (
            None
            if seconds is None
            else ("expire", {"key": positionals[0], "seconds": seconds}, _flag)
        )
    if command == "persist" and len(positionals) == 1:
        return "persist", {"key": positionals[0]}, _flag
    if command == "ttl" and len(positionals) == 1:
        return "ttl", {"key": positionals[0]}, _ttl
    return None


def parse_line(line: str, cursor: str) -> Built | str:
    """One line's request (with its cursor) and printer, or why it cannot be run."""
    if line.isascii() and _PLAIN.isdisjoint(line) and line.replace("\t", " ").isprintable():
        argv = line.split()  # nothing a shell would treat specially: 50 times faster than shlex
    else:
        try:
            argv = shlex.split(line, comments=False, posix=True)
        except ValueError as exc:
            return f"cannot split it as a shell would ({exc})"
    found = fast._global_options(argv)  # --cursor may come before the command, as in a shell
    if found is None:
        return "it has no command"
    before, _json, index = found
    command = argv[index]
    split = fast._split(fast._OPTIONS.get(command, {}), argv[index + 1 :])
    built = None
    if split is not None and not (set(before) | set(split.globals)) - {"cursor"}:
        built = _build(command, split.positionals, dict(split.options))
    if built is None or split is None:
        return f"{command!r} with these arguments is not a command batch runs (see `batch --help`)"
    op, args, printer = built
    args["cursor"] = split.globals.get("cursor", before.get("cursor", cursor))
    return op, args, printer


def batch(options: Globals, lines: Sequence[str], *, atomic: bool = False) -> int:
    """Run ``lines`` (see the module's docstring): one answer a line on stdout, in order
    (``--json``: one JSON object a line); exit 0 if every line succeeded, else the exit status of
    the first that failed. A line that cannot be parsed stops the batch before anything is sent
    (exit 2)."""
    wanted = [
        (number, line)
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if len(wanted) > MAX_LINES:
        say(f"error: a batch takes at most {MAX_LINES} lines; split the input.")
        return 1
    built: list[Built] = []
    for number, line in wanted:
        parsed = parse_line(line, options.cursor)
        if isinstance(parsed, str):
            say(f"error: line {number}: {parsed}: {line.strip()}")
            return 2
        built.append(parsed)
    if atomic:
        return _atomic(options, [n for n, _ in wanted], built)

    def body(client: Client) -> int:
        results = client.call_many([(op, args) for op, args, _ in built])
        return _report(options, [n for n, _ in wanted], results, [p for _, _, p in built])

    return run(options, body)


def _report(
    options: Globals, numbers: list[int], results: list[Any], printers: list[Printer]
) -> int:
    from prontodb.protocol import ProntoError

    out: list[bytes] = []
    status = 0
    for number, result, printer in zip(numbers, results, printers, strict=True):
        if isinstance(result, ProntoError):
            status = status or result.exit_status
            if options.json:
                out.append(
                    to_json({"line": number, "error": str(result.code), "message": result.message})
                )
            else:
                out.append(f"ERR {result.code}: {result.message}".encode())
        elif options.json:
            out.append(to_json({"line": number, "result": result}))
        else:
            out.append(printer(result).encode())
    write(b"".join(line + b"\n" for line in out))
    return status


# The commands --atomic takes, as transaction operations: the txn's result for each, printed.
_TXN_OPS = {"get": "get", "set": "set", "del": "del", "incr": "incr", "decr": "incr"}


def _atomic(options: Globals, numbers: list[int], built: list[Built]) -> int:
    ops: list[dict[str, Any]] = []
    cursors = {args["cursor"] for _, args, _ in built}
    for number, (op, args, _) in zip(numbers, built, strict=True):
        kind = _TXN_OPS.get(op)
        extra = set(args) - {"key", "value", "by", "cursor"}
        if kind is None or extra or len(cursors) > 1:
            say(
                f"error: line {number}: --atomic runs get, set, del, incr and decr of one cursor, "
                "with no options, as one transaction."
            )
            return 2
        entry = {"op": kind, "key": args["key"]}
        if "value" in args:
            entry["value"] = args["value"]
        if "by" in args:
            entry["by"] = args["by"] if op == "incr" else -args["by"]
        ops.append(entry)

    def body(client: Client) -> int:
        outcome = client.txn([], ops, cursor=cursors.pop() if cursors else None)
        printers = [_ok if op == "set" else p for op, _, p in built]
        results = [
            r["value"] if isinstance(r, dict) and "value" in r and op == "get" else r
            for r, (op, _, _) in zip(outcome.results, built, strict=True)
        ]
        return _report(options, numbers, results, printers)

    return run(options, body)


def read_lines() -> list[str]:
    """Standard input, as lines (undecodable bytes kept as surrogates, as arguments are)."""
    data = sys.stdin.buffer.read()
    return data.decode("utf-8", "surrogateescape").splitlines()
