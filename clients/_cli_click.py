"""The click front end of the ``prontodb`` command: every command and option, help and usage errors.

Each command's body is one call into ``_cli_commands``, which the fast path (``_cli_fast``) calls too.
Imported only when the fast path does not recognise argv, because importing click alone takes longer
than the rest of a ``prontodb get``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from . import _cli_commands as commands
from . import _cli_recipes as recipes
from ._locations import default_data_dir, default_socket_path, roster_dir

# A character argv cannot contain, so it cannot collide with a real argument.
_MARK = "\x00"


class _Command(click.Command):
    """A command that reads a bare negative number as a value (``set k -12``, ``incr k -5``).

    click would read ``-12`` as the short options ``-1 -2``. None of our options starts with a digit,
    so such arguments are marked before parsing, and the parameters' callbacks (:func:`_text`,
    :func:`_integer`) unmark them.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = self._take_globals(ctx, args)
        marked: list[str] = []
        options_end = False
        for arg in args:
            options_end = options_end or arg == "--"
            marked.append(_MARK + arg if not options_end and commands.is_number(arg) else arg)
        # Leftovers are refused here rather than by click, so that the message shows them unmarked.
        allow_extra = ctx.allow_extra_args
        ctx.allow_extra_args = True
        try:
            rest = [arg.removeprefix(_MARK) for arg in super().parse_args(ctx, marked)]
        except click.NoSuchOption as exc:
            # Most often a value that starts with '-' ("- bullet"): say how to pass one.
            raise click.NoSuchOption(
                exc.option_name,
                f"{exc.format_message()} A value that starts with '-' goes after `--` "
                "(`prontodb set KEY -- '-x'`), or comes from stdin (`set KEY -`) or a file "
                "(`set KEY --file PATH`).",
                ctx=ctx,
            ) from None
        finally:
            ctx.allow_extra_args = allow_extra
        if rest and not allow_extra and not ctx.resilient_parsing:
            plural = "s" if len(rest) > 1 else ""
            ctx.fail(f"Got unexpected extra argument{plural} ({' '.join(rest)})")
        ctx.args = rest
        return rest

    def _take_globals(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Global options given after the command (`prontodb get foo --cursor tasks`), taken as
        if given before it, unless the command has an option of that name (`grant --cursor`)."""
        own = {opt for param in self.params for opt in param.opts}
        found: dict[str, str] = {}
        rest: list[str] = []
        index = 0
        while index < len(args):
            arg = args[index]
            if arg == "--":
                rest.extend(args[index:])
                break
            name, equals, value = arg.partition("=")
            target = commands.GLOBAL_VALUE_OPTIONS.get(name)
            if target is not None and name not in own and (equals or index + 1 < len(args)):
                if not equals:
                    index += 1
                    value = args[index]
                found[target] = value
            else:
                rest.append(arg)
            index += 1
        if found:
            root = ctx.find_root()
            root.params.update(found)
            before = ctx.find_object(commands.Globals) or commands.Globals()
            resolved = commands.Globals(
                user=root.params.get("user"),
                cursor=root.params.get("cursor"),
                url=root.params.get("url"),
                json=before.json,
            )
            node: click.Context | None = ctx
            while node is not None:  # each context keeps its own reference to the options
                if isinstance(node.obj, commands.Globals):
                    node.obj = resolved
                node = node.parent
        return rest


def _text(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of a string parameter (or one taking several): the arguments as given."""
    if isinstance(value, tuple):
        return tuple(v.removeprefix(_MARK) if isinstance(v, str) else v for v in value)
    return value.removeprefix(_MARK) if isinstance(value, str) else value


def _integer(minimum: int | None = None) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Callback of an integer parameter, parsed as the fast path parses it."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).removeprefix(_MARK)
        number = commands.parse_int(text)
        if number is None:
            raise click.BadParameter(f"{text!r} is not an integer.", ctx, param)
        if minimum is not None and number < minimum:
            raise click.BadParameter(f"{text} is below {minimum}.", ctx, param)
        return number

    return convert


def _seconds(allow_zero: bool = False) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Callback of a duration in seconds (fractions allowed)."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).removeprefix(_MARK)
        seconds = commands.parse_seconds(text, allow_zero)
        if seconds is not None:
            return seconds
        try:
            float(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number of seconds.", ctx, param) from None
        raise click.BadParameter(f"{text} is not a duration above 0.", ctx, param)

    return convert


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (as the global --json does)."
)


def _parsed(
    parse: Callable[[str], Any], what: str
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Callback of an option read by one of the shared parsers (the fast path's too)."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).removeprefix(_MARK)
        parsed = parse(text)
        if parsed is None:
            raise click.BadParameter(f"{text!r} is not {what}.", ctx, param)
        return parsed

    return convert


_duration = _parsed(commands.parse_duration, "a duration (30, 30s, 5m, 2h, 1d)")
_time = _parsed(commands.parse_time, "a time (2026-12-24T08:00Z, or seconds since the epoch)")
_keys_list = _parsed(commands.parse_keys, "a comma-separated list of keys")
_backoff = _parsed(commands.parse_backoff, "FIRST:CAP, like 1s:5m (FIRST at most CAP)")


def _fence(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of ``--fence NAME:TOKEN``."""
    if value is None:
        return None
    text = str(value).removeprefix(_MARK)
    fence = commands.parse_fence(text)
    if fence is None:
        message = f"{text!r} is not NAME:TOKEN (like deploy:42, the token from $PRONTODB_FENCE)."
        raise click.BadParameter(message, ctx, param)
    return fence


_fence_option = click.option(
    "--fence",
    type=str,
    callback=_fence,
    metavar="NAME:TOKEN",
    help="Only while lock (semaphore, election) NAME is held with TOKEN, as `lock` gave it in "
    "$PRONTODB_FENCE (else exit 5: the holder lost it).",
)


def _finish(status: int) -> None:
    """End the command with ``status`` (click's way, so CliRunner and standalone mode agree)."""
    if status:
        raise click.exceptions.Exit(status)


class _Group(click.Group):
    """The command group, ending on Ctrl-C (SIGINT) with status 130 as shells report a command
    stopped by SIGINT (128 + 2), where click would say 1, the status of an error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"\n{commands.INTERRUPTED}", err=True)
            raise click.exceptions.Exit(commands.EXIT_INTERRUPTED) from None


@click.group("prontodb", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prontodb")
@click.option(
    "--user",
    metavar="NAME",
    help="The user to act as [env PRONTODB_USER; default: the owner of PRONTODB_TOKEN, else your login name].",
)
@click.option(
    "--cursor",
    metavar="NAME",
    help="The database to use [env PRONTODB_CURSOR; default: default].",
)
@click.option(
    "--url",
    metavar="URL",
    help="The broker, unix:///path or tcp://host:port [env PRONTODB_URL; default: the local "
    "socket, where a broker is started if none answers].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one document per command.")
@click.pass_context
def cli(
    ctx: click.Context, user: str | None, cursor: str | None, url: str | None, as_json: bool
) -> None:
    """ProntoDB: a coordination broker for agent fleets.

    Shares keys between cooperating programs (`prontodb set queue.task_1 pending`,
    `prontodb get queue.task_1`). With no --url, a broker is started in the background on first use.
    Exit status: 0 ok, 1 error, 2 usage, 3 not found, 4 timed out, 5 compare failed,
    6 lock lost while its command ran, 130 interrupted (Ctrl-C).
    """
    ctx.obj = commands.Globals(user=user, cursor=cursor, url=url, json=as_json)


def _globals(ctx: click.Context, as_json: bool) -> commands.Globals:
    options = ctx.find_object(commands.Globals) or commands.Globals()
    return options.with_json(as_json)


@cli.command("get", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.option(
    "--meta",
    is_flag=True,
    help="Print key=value lines: value, revisions, version, writer, time, size.",
)
@_json_option
@click.pass_context
def get_command(ctx: click.Context, key: str, meta: bool, as_json: bool) -> None:
    """Print KEY's value and a newline (a missing key: nothing on stdout, exit 3)."""
    _finish(commands.get(_globals(ctx, as_json), key, meta=meta))


@cli.command("set", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("value", type=str, callback=_text, required=False)
@click.option(
    "--file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=False),
    metavar="PATH",
    help="Take the value from the file PATH instead of VALUE.",
)
@click.option(
    "--string", "as_string", is_flag=True, help="Store VALUE as text even if it is an integer."
)
@click.option("--if-absent", is_flag=True, help="Only if KEY does not exist (else exit 5).")
@click.option(
    "--if-rev",
    type=str,
    callback=_integer(minimum=0),
    metavar="N",
    help="Only if KEY's modify revision is N; 0 means only if absent (else exit 5).",
)
@click.option(
    "--ttl",
    type=str,
    callback=_seconds(),
    metavar="SECONDS",
    help="Expire KEY this many seconds from now (fractions allowed; default: its cache's TTL).",
)
@click.option(
    "--session",
    type=str,
    callback=_integer(minimum=0),
    metavar="ID",
    help="Attach KEY to session ID (see `session grant`): it is deleted when the session ends.",
)
@_fence_option
@click.option(
    "--priority",
    type=str,
    callback=_integer(minimum=0),
    metavar="N",
    help="A queue item's priority: `claim` takes the most urgent first (0; default 100).",
)
@click.option(
    "--delay",
    type=str,
    callback=_duration,
    metavar="DURATION",
    help="Claimable only this long from now (30, 30s, 5m, 2h, 1d).",
)
@click.option(
    "--at",
    type=str,
    callback=_time,
    metavar="TIME",
    help="Claimable only from TIME (2026-12-24T08:00Z, or seconds since the epoch).",
)
@click.option(
    "--after",
    type=str,
    callback=_keys_list,
    metavar="K1,K2",
    help="Claimable only once these keys are gone (acked or deleted).",
)
@_json_option
@click.pass_context
def set_command(
    ctx: click.Context,
    key: str,
    value: str | None,
    from_file: str | None,
    as_string: bool,
    if_absent: bool,
    if_rev: int | None,
    ttl: float | None,
    session: int | None,
    fence: tuple[str, int] | None,
    priority: int | None,
    delay: float | None,
    at: float | None,
    after: list[str] | None,
    as_json: bool,
) -> None:
    """Set KEY to VALUE; silent on success.

    A VALUE that is a canonical integer within 64 bits (0, -12, 100; not 007 or +1) is stored as an
    integer, so that incr works on it; --string stores it as text. VALUE `-` reads the value from
    stdin, and --file PATH from a file (as they are: no newline is removed), for values too large
    for an argument (over about 128 KiB) or that start with '-' (or put `--` before VALUE).
    """
    if (value is None) == (from_file is None):
        raise click.UsageError(
            "Give the value as VALUE, as `-` to read it from stdin, or with --file PATH (one of them)."
        )
    if from_file is not None:
        with open(from_file, "rb") as file:
            value = commands.text_of(file.read())
    elif value == "-":
        value = commands.text_of(sys.stdin.buffer.read())
    assert value is not None
    status = commands.set_(
        _globals(ctx, as_json),
        key,
        value,
        as_string=as_string,
        if_absent=if_absent,
        if_rev=if_rev,
        ttl=ttl,
        session=session,
        fence=fence,
        priority=priority,
        delay=delay,
        at=at,
        after=after,
    )
    _finish(status)


@cli.command("del", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("more", nargs=-1, type=str, callback=_text, metavar="[KEY]...")
@_fence_option
@_json_option
@click.pass_context
def del_command(
    ctx: click.Context,
    key: str,
    more: tuple[str, ...],
    fence: tuple[str, int] | None,
    as_json: bool,
) -> None:
    """Delete KEY (and more keys, all at one revision); silent, and exit 0 whether or not they
    existed (--json says which, or how many)."""
    _finish(commands.delete(_globals(ctx, as_json), key, *more, fence=fence))


@cli.command("exists", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_json_option
@click.pass_context
def exists_command(ctx: click.Context, key: str, as_json: bool) -> None:
    """Exit 0 if KEY exists, 3 if not; silent (for `if prontodb exists KEY; then ...`)."""
    _finish(commands.exists(_globals(ctx, as_json), key))


@cli.command("mget", cls=_Command)
@click.argument("keys", nargs=-1, required=True, type=str, callback=_text)
@_json_option
@click.pass_context
def mget_command(ctx: click.Context, keys: tuple[str, ...], as_json: bool) -> None:
    """Print each KEY's value on a line of its own, in order, in one round trip.

    A missing key's line is empty; --json prints one object with null for a missing key (and
    tells an empty value from a missing one). Exit 0.
    """
    _finish(commands.mget(_globals(ctx, as_json), keys))


@cli.command("mset", cls=_Command)
@click.argument("pairs", nargs=-1, required=True, type=str, callback=_text, metavar="KEY VALUE...")
@click.option(
    "--string", "as_string", is_flag=True, help="Store every VALUE as text, integers too."
)
@_json_option
@click.pass_context
def mset_command(
    ctx: click.Context, pairs: tuple[str, ...], as_string: bool, as_json: bool
) -> None:
    """Set each KEY to its VALUE, all at one revision or none (at most 128 keys); silent.

    VALUEs are stored as `set` stores them (a canonical integer as an integer, unless --string).
    """
    if len(pairs) % 2:
        raise click.UsageError("mset takes KEY VALUE pairs: the last KEY has no VALUE.")
    _finish(commands.mset(_globals(ctx, as_json), pairs, as_string=as_string))


@cli.command("incr", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("by", type=str, default="1", callback=_integer())
@_fence_option
@_json_option
@click.pass_context
def incr_command(
    ctx: click.Context, key: str, by: int, fence: tuple[str, int] | None, as_json: bool
) -> None:
    """Add BY (default 1) to the integer at KEY and print the result; a missing key counts as 0."""
    _finish(commands.incr(_globals(ctx, as_json), key, by, fence=fence))


@cli.command("decr", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("by", type=str, default="1", callback=_integer())
@_fence_option
@_json_option
@click.pass_context
def decr_command(
    ctx: click.Context, key: str, by: int, fence: tuple[str, int] | None, as_json: bool
) -> None:
    """Subtract BY (default 1) from the integer at KEY and print the result."""
    _finish(commands.incr(_globals(ctx, as_json), key, by, decrement=True, fence=fence))


@cli.command("keys", cls=_Command)
@click.argument("prefix", type=str, callback=_text, default="")
@_json_option
@click.pass_context
def keys_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """List the keys at and below PREFIX (all keys if none), one per line, sorted.

    PREFIX follows segments: `keys queue` lists queue.task_1 but not queueing.x.
    """
    _finish(commands.keys(_globals(ctx, as_json), prefix))


@cli.command("scan", cls=_Command)
@click.argument("prefix", type=str, callback=_text, default="")
@_json_option
@click.pass_context
def scan_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """Print key=value lines for the keys at and below PREFIX, sorted.

    Made for `while IFS='=' read -r key value`. Values print as `get` prints them.
    """
    _finish(commands.scan(_globals(ctx, as_json), prefix))


@cli.command("expire", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("seconds", type=str, callback=_seconds(allow_zero=True))
@_json_option
@click.pass_context
def expire_command(ctx: click.Context, key: str, seconds: float, as_json: bool) -> None:
    """Make KEY expire SECONDS from now (0: now); silent, exit 3 if KEY does not exist."""
    _finish(commands.expire(_globals(ctx, as_json), key, seconds))


@cli.command("persist", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_json_option
@click.pass_context
def persist_command(ctx: click.Context, key: str, as_json: bool) -> None:
    """Remove KEY's TTL; silent, exit 0 whether or not it had one."""
    _finish(commands.persist(_globals(ctx, as_json), key))


@cli.command("ttl", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_json_option
@click.pass_context
def ttl_command(ctx: click.Context, key: str, as_json: bool) -> None:
    """Print the seconds KEY has left, or -1 if it has no TTL (a missing key: exit 3)."""
    _finish(commands.ttl(_globals(ctx, as_json), key))


@cli.command("create-cache", cls=_Command)
@click.argument("prefix", type=str, callback=_text)
@click.argument("seconds", type=str, callback=_seconds())
@_json_option
@click.pass_context
def create_cache_command(ctx: click.Context, prefix: str, seconds: float, as_json: bool) -> None:
    """Give every key set under PREFIX from now on a TTL of SECONDS, unless the set names one.

    `set` restarts a key's TTL, `incr` keeps it (a fixed window for rate limits).
    """
    _finish(commands.create_cache(_globals(ctx, as_json), prefix, seconds))


@cli.command("caches", cls=_Command)
@_json_option
@click.pass_context
def caches_command(ctx: click.Context, as_json: bool) -> None:
    """List the caches of the database as prefix=seconds lines."""
    _finish(commands.caches(_globals(ctx, as_json)))


@cli.command("drop-cache", cls=_Command)
@click.argument("prefix", type=str, callback=_text)
@_json_option
@click.pass_context
def drop_cache_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """Stop PREFIX being a cache (its keys keep their TTLs); silent."""
    _finish(commands.drop_cache(_globals(ctx, as_json), prefix))


@cli.command("cas", cls=_Command)
@click.argument("key", type=str, callback=_text)
@click.argument("old", type=str, callback=_text)
@click.argument("new", type=str, callback=_text)
@click.option(
    "--string",
    "as_string",
    is_flag=True,
    help="Read OLD and NEW as text even if they are integers.",
)
@_json_option
@click.pass_context
def cas_command(
    ctx: click.Context, key: str, old: str, new: str, as_string: bool, as_json: bool
) -> None:
    """Set KEY to NEW only if it holds OLD (compare-and-set); otherwise exit 5, changing nothing.

    OLD and NEW are read as set reads VALUE (a canonical integer is an integer).
    """
    _finish(commands.cas(_globals(ctx, as_json), key, old, new, as_string=as_string))


@cli.command("txn", cls=_Command)
@click.argument("file", type=click.File("r"), default="-")
@_fence_option
@_json_option
@click.pass_context
def txn_command(
    ctx: click.Context, file: Any, fence: tuple[str, int] | None, as_json: bool
) -> None:
    """Apply a transaction read as JSON from FILE (default: stdin), all or nothing.

    \b
    {"compares": [{"key": "pools.cpu_cores", "op": ">=", "value": 2}],
     "ops": [{"op": "incr", "key": "pools.cpu_cores", "by": -2},
             {"op": "set", "key": "allocated.worker1.cpu_cores", "value": 2}]}

    A compare is {"key", "target"?, "op"?, "value"}: target value (default), mod_rev, create_rev,
    version or exists; op ==, !=, <, <=, >, >=. An operation is {"op": "get"|"set"|"del"|"incr",
    "key", "value"?, "by"?}. Prints "succeeded revision=N" and one line per operation's result, or
    "failed compares=I,J" and exits 5.
    """
    _finish(commands.txn(_globals(ctx, as_json), file.read(), fence))


def _token(help: str) -> Callable[[Any], Any]:
    """The required ``--token T`` option, with its help."""
    return click.option(
        "--token", type=str, required=True, callback=_integer(minimum=0), metavar="T", help=help
    )


_token_option = _token("The fencing token the claim was handed out with (claim --json shows it).")


@cli.command("claim", cls=_Command)
@click.argument("prefix", type=str, callback=_text)
@click.option(
    "--wait",
    type=str,
    callback=_seconds(allow_zero=True),
    metavar="SECONDS",
    help="Wait up to this long for an item (first come, first served); none came: exit 4.",
)
@click.option(
    "--lease",
    type=str,
    callback=_seconds(),
    metavar="SECONDS",
    help="How long the claim holds the item before it goes back (default 60).",
)
@click.option(
    "--max-deliveries",
    type=str,
    callback=_integer(minimum=1),
    metavar="N",
    help="Move an item handed out N times already to dead.<key> instead of handing it out.",
)
@_json_option
@click.pass_context
def claim_command(
    ctx: click.Context,
    prefix: str,
    wait: float | None,
    lease: float | None,
    max_deliveries: int | None,
    as_json: bool,
) -> None:
    """Take the oldest unclaimed direct child of PREFIX and print key=value (exit 4: none).

    The item stays readable but no other claimer gets it until it is acked (ack), given back
    (release) or its lease runs out. --json also prints the token that ack, release and extend
    need, the lease deadline and how many times the item was handed out.
    """
    status = commands.claim(
        _globals(ctx, as_json), prefix, wait=wait, lease=lease, max_deliveries=max_deliveries
    )
    _finish(status)


@cli.command("ack", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_token_option
@_json_option
@click.pass_context
def ack_command(ctx: click.Context, key: str, token: int, as_json: bool) -> None:
    """Finish the claimed KEY: it is deleted (exit 5 if the claim is no longer held)."""
    _finish(commands.ack(_globals(ctx, as_json), key, token))


@cli.command("release", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_token_option
@click.option(
    "--delay",
    type=str,
    callback=_seconds(allow_zero=True),
    metavar="SECONDS",
    help="Claimable again only after this long (default: the queue's backoff, if any, else now).",
)
@click.option(
    "--priority",
    type=str,
    callback=_integer(minimum=0),
    metavar="N",
    help="Its new priority (0 most urgent).",
)
@_json_option
@click.pass_context
def release_command(
    ctx: click.Context,
    key: str,
    token: int,
    delay: float | None,
    priority: int | None,
    as_json: bool,
) -> None:
    """Give the claimed KEY back to its queue (exit 5 if the claim is no longer held)."""
    _finish(commands.release(_globals(ctx, as_json), key, token, delay, priority))


@cli.command("extend", cls=_Command)
@click.argument("key", type=str, callback=_text)
@_token_option
@click.option(
    "--lease",
    type=str,
    required=True,
    callback=_seconds(),
    metavar="SECONDS",
    help="Hold the claim this long from now.",
)
@_json_option
@click.pass_context
def extend_command(ctx: click.Context, key: str, token: int, lease: float, as_json: bool) -> None:
    """Renew the claim on KEY (exit 5 if it is no longer held)."""
    _finish(commands.extend(_globals(ctx, as_json), key, token, lease))


@cli.group("cursor")
def cursor_group() -> None:
    """Name databases: bind a cursor to a directory, list, show and forget bindings.

    A cursor NAME with no binding is the database DATA_DIR/NAME.db. With --user given on the
    command line, set and delete act on that user's own cursor, which shadows a global one of
    that name for that user only.
    """


def _mine(ctx: click.Context) -> bool:
    """Whether --user was given on the command line: then the cursor is that user's own."""
    root = ctx.find_root()
    return root.params.get("user") is not None


@cursor_group.command("set", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.argument("path", type=str, callback=_text)
@_json_option
@click.pass_context
def cursor_set_command(ctx: click.Context, name: str, path: str, as_json: bool) -> None:
    """Bind cursor NAME to the database directory PATH (made on its first write).

    A relative PATH is taken from the current directory: `cursor set dev ./dev.db`.
    """
    _finish(commands.cursor_set(_globals(ctx, as_json), name, path, mine=_mine(ctx)))


@cursor_group.command("list", cls=_Command)
@_json_option
@click.pass_context
def cursor_list_command(ctx: click.Context, as_json: bool) -> None:
    """List cursors: NAME PATH OWNER (global, user:U, or default for an unbound database)."""
    _finish(commands.cursor_list(_globals(ctx, as_json)))


@cursor_group.command("show", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_json_option
@click.pass_context
def cursor_show_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show what cursor NAME means for you: its path, owner, and whether it is defined."""
    _finish(commands.cursor_show(_globals(ctx, as_json), name))


@cursor_group.command("delete", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.option("--purge", is_flag=True, help="Also delete the database's files (needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --purge.")
@_json_option
@click.pass_context
def cursor_delete_command(
    ctx: click.Context, name: str, purge: bool, yes: bool, as_json: bool
) -> None:
    """Forget cursor NAME's binding; its data stays where it is unless --purge --yes."""
    if purge and not yes:
        raise click.UsageError("--purge deletes the data: add --yes to confirm.")
    _finish(commands.cursor_delete(_globals(ctx, as_json), name, mine=_mine(ctx), purge=purge))


@cli.command("backup", cls=_Command)
@click.option(
    "--output", metavar="PATH", help="Write a backup to PATH.db (or into PATH, a directory)."
)
@click.option("--restore", metavar="FILE", help="Put back the databases the backup FILE holds.")
@click.option(
    "--list", "list_path", metavar="PATH", help="Show what a backup file (or directory) holds."
)
@click.option("--cursor", "only", metavar="NAME", help="Only this cursor's database.")
@_json_option
@click.pass_context
def backup_command(
    ctx: click.Context,
    output: str | None,
    restore: str | None,
    list_path: str | None,
    only: str | None,
    as_json: bool,
) -> None:
    """Back up every database to one self-checking file, restore, or list backups.

    `backup --output ./backups/pre-deployment-20261125` writes
    ./backups/pre-deployment-20261125.db (a consistent copy taken while writers run) and prints
    its path; `backup --restore FILE` puts back each database the file holds, atomically (a
    damaged file changes nothing); `backup --list ./backups` shows what each file holds. With
    --cursor (or the global --cursor given on the command line), only that cursor's database.
    """
    chosen = [
        flag
        for flag, value in (("--output", output), ("--restore", restore), ("--list", list_path))
        if value is not None
    ]
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --output, --restore and --list.")
    options = _globals(ctx, as_json)
    cursor = only if only is not None else ctx.find_root().params.get("cursor")
    if output is not None:
        _finish(commands.backup(options, output, cursor))
    elif restore is not None:
        _finish(commands.restore(options, restore, cursor))
    else:
        assert list_path is not None
        _finish(commands.backup_list(options, list_path))


@cli.group("user")
def user_group() -> None:
    """Users: add one (its token is printed once), list, remove, or give one a new token.

    Tokens matter where the broker wants them: always on TCP (unless serve --insecure on
    loopback), and on the Unix socket with serve --require-auth. A client gives its token in
    PRONTODB_TOKEN. A new data directory gets the user admin, with admin on everything; its
    token is in DATA_DIR/admin.token.
    """


@user_group.command("add", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_json_option
@click.pass_context
def user_add_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Make user NAME and print its token (shown this once)."""
    _finish(commands.user_command(_globals(ctx, as_json), "add", name))


@user_group.command("token", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_json_option
@click.pass_context
def user_token_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Give NAME a new token and print it; the old one stops working."""
    _finish(commands.user_command(_globals(ctx, as_json), "token", name))


@user_group.command("remove", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.pass_context
def user_remove_command(ctx: click.Context, name: str) -> None:
    """Remove user NAME and its grants."""
    _finish(commands.user_command(_globals(ctx, False), "remove", name))


@user_group.command("list", cls=_Command)
@_json_option
@click.pass_context
def user_list_command(ctx: click.Context, as_json: bool) -> None:
    """List users: NAME created=TIME by=USER grants=N."""
    _finish(commands.user_command(_globals(ctx, as_json), "list"))


_LEVEL = click.Choice(["read", "write", "admin"])


def _grant_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option(
        "--prefix",
        default="",
        metavar="P",
        help="Only at and below this key prefix (default: every key).",
    )(command)
    return click.option(
        "--cursor", "target", metavar="C", help="Only this cursor's database (default: every one)."
    )(command)


@cli.command("grant", cls=_Command)
@click.argument("user", type=str, callback=_text)
@click.argument("level", type=_LEVEL)
@_grant_options
@_json_option
@click.pass_context
def grant_command(
    ctx: click.Context, user: str, level: str, target: str | None, prefix: str, as_json: bool
) -> None:
    """Give USER the permission LEVEL: read < write < admin (each includes the ones before)."""
    options = _globals(ctx, as_json)
    _finish(commands.grant_command(options, "grant", user, level, cursor=target, prefix=prefix))


@cli.command("revoke", cls=_Command)
@click.argument("user", type=str, callback=_text)
@click.argument("level", type=_LEVEL)
@_grant_options
@click.pass_context
def revoke_command(
    ctx: click.Context, user: str, level: str, target: str | None, prefix: str
) -> None:
    """Take back the grant made with the same USER, LEVEL, --cursor and --prefix."""
    options = _globals(ctx, False)
    _finish(commands.grant_command(options, "revoke", user, level, cursor=target, prefix=prefix))


@cli.command("grants", cls=_Command)
@click.argument("user", type=str, callback=_text, required=False)
@_json_option
@click.pass_context
def grants_command(ctx: click.Context, user: str | None, as_json: bool) -> None:
    """List grants (of USER, or everyone's): USER LEVEL cursor=C prefix=P (* for all)."""
    _finish(commands.grant_command(_globals(ctx, as_json), "list", user))


@cli.command("watch", cls=_Command)
@click.argument("prefix", type=str, callback=_text, default="")
@click.option(
    "--from-rev",
    type=str,
    callback=_integer(minimum=1),
    metavar="N",
    help="First replay every change since revision N, then go on live (no gap, no repeat).",
)
@click.option(
    "--count",
    type=str,
    callback=_integer(minimum=1),
    metavar="N",
    help="Exit after N events.",
)
@click.option(
    "--timeout",
    type=str,
    callback=_seconds(),
    metavar="SECONDS",
    help="Exit after this long; exit 4 if no event came by then.",
)
@_json_option
@click.pass_context
def watch_command(
    ctx: click.Context,
    prefix: str,
    from_rev: int | None,
    count: int | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Print every change under PREFIX as it happens: REV TYPE KEY=VALUE, one per line.

    TYPE is put, delete, expire, claim, ack or release (delete, expire and ack print no value).
    Lines are flushed one by one, so `prontodb watch jobs | while read ...` works. A watch that
    falls behind the broker's history (it keeps the last 100 000 revisions) is cut off: exit 1,
    with the revision to resume from in the message.
    """
    _finish(
        commands.watch(
            _globals(ctx, as_json), prefix, from_rev=from_rev, count=count, timeout=timeout
        )
    )


@cli.command("claims", cls=_Command)
@click.argument("prefix", type=str, callback=_text, default="")
@_json_option
@click.pass_context
def claims_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """List the claims held at and below PREFIX: key, holder, token, lease deadline."""
    _finish(commands.claims(_globals(ctx, as_json), prefix))


@cli.group("session")
def session_group() -> None:
    """Sessions: leases with an id and a TTL; keys set with --session ID are deleted when the
    session ends (its deadline passes without a keep-alive, or it is revoked)."""


@session_group.command("grant", cls=_Command)
@click.option(
    "--ttl",
    type=str,
    callback=_seconds(),
    metavar="SECONDS",
    required=True,
    help="Seconds the session lives from now and from each keep-alive.",
)
@_json_option
@click.pass_context
def session_grant_command(ctx: click.Context, ttl: float, as_json: bool) -> None:
    """Print the id of a new session (keep it alive with `session keepalive ID`)."""
    _finish(commands.session_grant(_globals(ctx, as_json), ttl))


@session_group.command("keepalive", cls=_Command)
@click.argument("session", metavar="ID", type=str, callback=_integer(minimum=0))
@_json_option
@click.pass_context
def session_keepalive_command(ctx: click.Context, session: int, as_json: bool) -> None:
    """Keep session ID alive for its TTL from now (exit 3 if it has ended)."""
    _finish(commands.session_keepalive(_globals(ctx, as_json), session))


@session_group.command("revoke", cls=_Command)
@click.argument("session", metavar="ID", type=str, callback=_integer(minimum=0))
@_json_option
@click.pass_context
def session_revoke_command(ctx: click.Context, session: int, as_json: bool) -> None:
    """End session ID now and print the keys deleted with it (exit 3 if it has ended)."""
    _finish(commands.session_revoke(_globals(ctx, as_json), session))


@session_group.command("list", cls=_Command)
@_json_option
@click.pass_context
def session_list_command(ctx: click.Context, as_json: bool) -> None:
    """List the live sessions: id, owner, TTL, deadline, number of keys."""
    _finish(commands.session_list(_globals(ctx, as_json)))


@cli.command("ping")
@_json_option
@click.pass_context
def ping_command(ctx: click.Context, as_json: bool) -> None:
    """Print `pong` once the broker answers (starting it, like any data command)."""
    _finish(commands.ping(_globals(ctx, as_json)))


@cli.command("status")
@_json_option
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show the broker: pid, uptime, data directory, socket, databases, connections.

    Never starts a broker: exits 1 when none runs.
    """
    _finish(commands.status(_globals(ctx, as_json)))


@cli.command("stop")
@click.option(
    "--all", "every", is_flag=True, help="Stop every broker of yours that `prontodb ps` lists."
)
@_json_option
@click.pass_context
def stop_command(ctx: click.Context, every: bool, as_json: bool) -> None:
    """Stop the broker and wait until it is gone (exit 0, with a note, if none runs).

    With --all, every broker of yours, whatever its data directory (SIGTERM to each, then wait
    for each to exit): one line `stopped PID DATA_DIR` per broker.
    """
    options = _globals(ctx, as_json)
    _finish(commands.stop_all(options) if every else commands.stop(options))


@cli.command("ps")
@_json_option
@click.pass_context
def ps_command(ctx: click.Context, as_json: bool) -> None:
    """List your running brokers: pid, uptime, connections, idle exit, data directory, address.

    Every broker that `prontodb serve` runs (those the CLI starts too) lists itself while it
    runs; a header alone when none does. Never starts a broker.
    """
    _finish(commands.ps(_globals(ctx, as_json)))


@cli.command("top", cls=_Command)
@click.option(
    "--interval",
    type=str,
    callback=_seconds(),
    default="1",
    metavar="SECONDS",
    help="Seconds between two frames; the rates and p99s are over it [default: 1].",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print one frame, over one interval (two snapshots that far apart), and exit.",
)
@_json_option
@click.pass_context
def top_command(ctx: click.Context, interval: float, once: bool, as_json: bool) -> None:
    """Watch the broker live: ops/s and p99 by operation, fsyncs, connections by user, the
    deepest queues, watchers and their lag, databases, memory and disk (docs/CLI.md).

    Redrawn every interval until `q` or Ctrl-C. With --json, one object per interval instead
    (a line each, for scripts). A broker that goes away is said so, and asked again each interval.
    """
    from . import _cli_top  # rich is imported by this command alone

    _finish(_cli_top.top(_globals(ctx, as_json), interval, once=once))


MCP_MISSING = (
    "error: `prontodb mcp` needs the MCP SDK, an optional extra: pip install 'prontodb[mcp]'"
)


F = TypeVar("F", bound=Callable[..., Any])


def _tls_options(where: str) -> Callable[[F], F]:
    """``--tls-cert`` and ``--tls-key``, told as for ``where``."""

    def add(command: F) -> F:
        files = click.Path(dir_okay=False, exists=True)
        command = click.option("--tls-key", type=files, help=f"{where}: the private key (PEM).")(
            command
        )
        return click.option(
            "--tls-cert", type=files, help=f"{where}: the certificate chain (PEM)."
        )(command)

    return add


@cli.command("mcp")
@click.option(
    "--read-only", is_flag=True, help="Offer only the tools that change nothing (get, keys, ...)."
)
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio (a PORT alone is on "
    "127.0.0.1; port 0 picks one).",
)
@_tls_options("With --http (needed off loopback)")
@click.pass_context
def mcp_command(
    ctx: click.Context,
    read_only: bool,
    http: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Serve ProntoDB's tools to an AI agent host over MCP on stdio (docs/MCP.md).

    Every tool acts as the user given by --user and PRONTODB_TOKEN, on --cursor's database by
    default; none takes a user. With --http, every request must carry that user's token as
    `Authorization: Bearer`. Needs the extra: pip install 'prontodb[mcp]'.
    """
    import os
    from pathlib import Path

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("TLS needs both --tls-cert and --tls-key.")
    if tls_cert is not None and http is None:
        raise click.UsageError("--tls-cert and --tls-key go with --http.")
    try:
        from . import _mcp_http, _mcp_server  # the SDK is imported by this command alone
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("mcp", "mcp_types", "uvicorn"):
            raise
        commands.say(MCP_MISSING)
        _finish(1)
        return
    options = _globals(ctx, False)
    if http is None:
        _finish(_mcp_server.main(options, read_only))
        return
    tls = None if tls_cert is None or tls_key is None else (Path(tls_cert), Path(tls_key))
    try:
        where = _mcp_http.listen(http, os.environ.get("PRONTODB_TOKEN") or None, tls)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from None
    _finish(_mcp_http.main(options, read_only, where))


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Directory of the databases [env PRONTODB_DATA_DIR; default ~/.local/share/prontodb].",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="Unix socket to listen on [env PRONTODB_SOCKET; default under $XDG_RUNTIME_DIR].",
)
@click.option("--tcp", metavar="HOST:PORT", help="Also listen on TCP (port 0 picks a free one).")
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Serve /metrics, /healthz and /readyz over HTTP (off loopback: TLS and a user's token).",
)
@click.option(
    "--fsync",
    type=click.Choice(["always", "interval", "never"]),
    default="always",
    show_default=True,
    help="When a write counts as durable: after its fsync, within a second, or when the OS writes it.",
)
@click.option(
    "--history-revisions",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Revisions of each database's recent changes kept for watchers starting in the past.",
)
@click.option(
    "--history-seconds",
    type=click.FloatRange(min=0, min_open=True),
    help="Also keep no change older than this for watchers (default: no age limit).",
)
@click.option(
    "--require-auth",
    is_flag=True,
    help="Want a token on the Unix socket too (there, by default, its file mode is the boundary).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Let TCP connections in without a token (a loopback --tcp address only).",
)
@_tls_options("TLS on TCP and --http")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    help="Log here instead of to stderr, rotated by size (the 3 older files are kept).",
)
@click.option(
    "--log-max-bytes",
    type=click.IntRange(min=1024),
    default=10 << 20,
    show_default=True,
    help="With --log-file: the size at which the log file is rotated.",
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Stop after this long with no connection open (0: never, the default; an auto-started "
    "broker gets 600, or $PRONTODB_IDLE_EXIT).",
)
@click.option("--ready-fd", type=int, hidden=True, help="Write one JSON line here once listening.")
@click.option("--auto-started", is_flag=True, hidden=True, help="Started by a CLI that found none.")
def serve(
    data_dir: str | None,
    socket_path: str | None,
    tcp: str | None,
    http: str | None,
    fsync: str,
    history_revisions: int,
    history_seconds: float | None,
    require_auth: bool,
    insecure: bool,
    tls_cert: str | None,
    tls_key: str | None,
    log_file: str | None,
    log_max_bytes: int,
    idle_exit: float,
    ready_fd: int | None,
    auto_started: bool,
) -> None:
    """Run the broker in the foreground until SIGTERM, SIGINT or `prontodb stop`."""
    import os
    from pathlib import Path

    from prontodb.broker.engine import HistoryLimits
    from prontodb.broker.server import ServerConfig, parse_tcp, run
    from prontodb.broker.storage import FsyncPolicy
    from prontodb.protocol import LOOPBACK

    data = os.path.abspath(data_dir) if data_dir else default_data_dir()
    sock = os.path.abspath(socket_path) if socket_path else default_socket_path(data)
    try:
        tcp_address = parse_tcp(tcp) if tcp else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tcp") from None
    if insecure and (tcp_address is None or tcp_address[0] not in LOOPBACK):
        raise click.BadParameter(
            "only with a loopback --tcp address (127.0.0.1, ::1): elsewhere TCP needs tokens",
            param_hint="--insecure",
        )
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("TLS needs both --tls-cert and --tls-key.")
    try:
        http_address = parse_tcp(http) if http else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from None
    if http_address is not None and http_address[0] not in LOOPBACK and tls_cert is None:
        raise click.BadParameter(
            "off loopback the metrics listener needs TLS: give --tls-cert and --tls-key, or a "
            "loopback address (127.0.0.1:PORT)",
            param_hint="--http",
        )
    if not idle_exit < float("inf"):  # inf and nan pass FloatRange
        raise click.BadParameter("a number of seconds (0 for never)", param_hint="--idle-exit")
    config = ServerConfig(
        data_dir=Path(data),
        socket_path=Path(sock),
        tcp=tcp_address,
        fsync=FsyncPolicy(fsync),
        history=HistoryLimits(revisions=history_revisions, seconds=history_seconds),
        require_auth=require_auth,
        insecure=insecure,
        tls=None if tls_cert is None or tls_key is None else (Path(tls_cert), Path(tls_key)),
        http=http_address,
        idle_exit=idle_exit or None,
        auto_started=auto_started,
        roster=Path(roster_dir()),
    )
    log = Path(os.path.abspath(log_file)) if log_file else None
    raise SystemExit(run(config, ready_fd=ready_fd, log_file=log, log_max_bytes=log_max_bytes))


def invoke(args: Sequence[str], **extra: Any) -> Any:
    """Run the click group on ``args`` as ``prontodb``."""
    return cli.main(list(args), prog_name="prontodb", **extra)


# -- locks, semaphores, elections, barriers (docs/RECIPES.md) -----------------------------------

_COMMAND_SETTINGS: dict[str, Any] = {}  # CMD comes after `--`, which ends the options
_recipe_command = click.argument(
    "command", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD ARGS...]"
)
_wait_option = click.option(
    "--wait",
    type=str,
    callback=_seconds(allow_zero=True),
    metavar="SECONDS",
    help="Wait at most this long for the turn (0: try once; default: as long as it takes); "
    "exit 4 when it runs out.",
)
_ttl_option = click.option(
    "--ttl",
    type=str,
    callback=_seconds(),
    default="10",
    metavar="SECONDS",
    help="The session's TTL (default 10): a holder that stops renewing (killed, stopped) loses "
    "it this long after its last renewal.",
)
_session_option = click.option(
    "--session",
    type=str,
    callback=_integer(minimum=0),
    metavar="ID",
    help="Join with session ID (e.g. $PRONTODB_SESSION under `session run`) instead of a new "
    "one; only without CMD.",
)


def _hold(
    ctx: click.Context,
    recipe: str,
    name: str,
    command: tuple[str, ...],
    as_json: bool,
    **options: Any,
) -> None:
    if command and command[0] == "--":
        command = command[1:]
    if command and options.get("session") is not None:
        raise click.UsageError("--session joins without CMD; with CMD the command holds its own.")
    _finish(recipes.hold(_globals(ctx, as_json), recipe, name, command, **options))


@cli.command("lock", cls=_Command, context_settings=_COMMAND_SETTINGS)
@click.argument("name", type=str, callback=_text)
@_wait_option
@_ttl_option
@_session_option
@_json_option
@_recipe_command
@click.pass_context
def lock_command(
    ctx: click.Context,
    name: str,
    wait: float | None,
    ttl: float,
    session: int | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Hold lock NAME while CMD runs (its exit status is the command's), waiters served first
    come, first served; CMD finds the fencing token in $PRONTODB_FENCE. Without CMD, print the
    token: the lock lasts for --ttl (or --session's life) unless `unlock NAME --token T` ends it.
    Exit 4 if --wait runs out; 6 if the lock was lost while CMD ran (CMD was sent SIGTERM)."""
    _hold(ctx, "lock", name, command, as_json, wait=wait, ttl=ttl, session=session)


@cli.command("semaphore", cls=_Command, context_settings=_COMMAND_SETTINGS)
@click.argument("name", type=str, callback=_text)
@click.option(
    "--limit",
    type=str,
    required=True,
    callback=_integer(minimum=1),
    metavar="N",
    help="At most N holders; every party must name the same N (else exit 5).",
)
@_wait_option
@_ttl_option
@_session_option
@_json_option
@_recipe_command
@click.pass_context
def semaphore_command(
    ctx: click.Context,
    name: str,
    limit: int,
    wait: float | None,
    ttl: float,
    session: int | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Hold one of the N slots of semaphore NAME while CMD runs (as `lock` does)."""
    _hold(
        ctx, "semaphore", name, command, as_json, limit=limit, wait=wait, ttl=ttl, session=session
    )


@cli.command("elect", cls=_Command, context_settings=_COMMAND_SETTINGS)
@click.argument("name", type=str, callback=_text)
@click.option("--value", required=True, type=str, callback=_text, help="This candidate's value.")
@_wait_option
@_ttl_option
@_session_option
@_json_option
@_recipe_command
@click.pass_context
def elect_command(
    ctx: click.Context,
    name: str,
    value: str,
    wait: float | None,
    ttl: float,
    session: int | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Run CMD as the leader of election NAME once elected (as `lock` does); its term, the
    fencing token, is in $PRONTODB_FENCE. Without CMD, print the term once elected."""
    stored = commands.stored_value(value)
    _hold(
        ctx, "election", name, command, as_json, value=stored, wait=wait, ttl=ttl, session=session
    )


@cli.command("barrier", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.option(
    "--count",
    type=str,
    required=True,
    callback=_integer(minimum=1),
    metavar="N",
    help="Return once N parties have arrived.",
)
@click.option(
    "--timeout",
    type=str,
    callback=_seconds(allow_zero=True),
    metavar="SECONDS",
    help="Give up after this long (exit 4; default: wait as long as it takes).",
)
@_ttl_option
@_json_option
@click.pass_context
def barrier_command(
    ctx: click.Context, name: str, count: int, timeout: float | None, ttl: float, as_json: bool
) -> None:
    """Wait until N parties have arrived at barrier NAME, then return in every one of them
    together (exit 4 on --timeout). A party that dies drops out instead of counting."""
    _finish(
        recipes.hold(
            _globals(ctx, as_json),
            "barrier",
            name,
            (),
            limit=count,
            wait=timeout,
            ttl=ttl,
            outlive=False,
        )
    )


_token_required = _token("The holder's token (the term, for an election), as acquiring printed it.")


@cli.command("unlock", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_token_required
@_json_option
@click.pass_context
def unlock_command(ctx: click.Context, name: str, token: int, as_json: bool) -> None:
    """Release NAME held with token T (lock, semaphore slot, or a place in line), never by name
    alone; exit 3 if that token is not there."""
    _finish(recipes.unlock(_globals(ctx, as_json), name, token))


@cli.command("resign", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_token_required
@_json_option
@click.pass_context
def resign_command(ctx: click.Context, name: str, token: int, as_json: bool) -> None:
    """Step down as leader of election NAME (term T); the next candidate leads."""
    _finish(recipes.unlock(_globals(ctx, as_json), name, token))


@cli.command("proclaim", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.argument("value", type=str, callback=_text)
@_token_required
@_json_option
@click.pass_context
def proclaim_command(ctx: click.Context, name: str, value: str, token: int, as_json: bool) -> None:
    """As leader of election NAME (term T), announce VALUE; exit 5 if T does not lead."""
    _finish(recipes.proclaim(_globals(ctx, as_json), name, token, commands.stored_value(value)))


@cli.command("leader", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_json_option
@click.pass_context
def leader_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Print election NAME's leader as `term=T VALUE`; exit 3 if nobody leads."""
    _finish(recipes.leader(_globals(ctx, as_json), name))


@cli.command("observe", cls=_Command)
@click.argument("name", type=str, callback=_text)
@click.option(
    "--count", type=str, callback=_integer(minimum=1), metavar="N", help="Exit after N lines."
)
@_json_option
@click.pass_context
def observe_command(ctx: click.Context, name: str, count: int | None, as_json: bool) -> None:
    """Print election NAME's leader now, then a line at each change (`-`: nobody leads)."""
    _finish(recipes.observe(_globals(ctx, as_json), name, count=count))


@cli.command("holders", cls=_Command)
@click.argument("name", type=str, callback=_text)
@_json_option
@click.pass_context
def holders_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """List NAME's members in line: token, holding or waiting, session, user, value."""
    _finish(recipes.holders(_globals(ctx, as_json), name))


@cli.command("locks", cls=_Command)
@click.argument("prefix", type=str, default="", callback=_text)
@_json_option
@click.pass_context
def locks_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """List every lock, semaphore, election and barrier at or below PREFIX, with its holders
    and waiters."""
    _finish(recipes.locks(_globals(ctx, as_json), prefix))


@session_group.command("run", cls=_Command, context_settings=_COMMAND_SETTINGS)
@click.option(
    "--ttl",
    type=str,
    required=True,
    callback=_seconds(),
    metavar="SECONDS",
    help="The session's TTL: kept alive while CMD runs; its keys go this long after a crash.",
)
@_json_option
@_recipe_command
@click.pass_context
def session_run_command(
    ctx: click.Context, ttl: float, as_json: bool, command: tuple[str, ...]
) -> None:
    """Run CMD with a session kept alive for it, its id in $PRONTODB_SESSION (`prontodb set KEY
    VALUE --session $PRONTODB_SESSION` attaches a key to it); when CMD exits the session ends
    and its keys are deleted. Exit: CMD's status; 6 if the session was lost (CMD got SIGTERM)."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("Give the command to run: `session run --ttl 10 -- CMD ARGS...`.")
    _finish(recipes.session_run(_globals(ctx, as_json), ttl, command))


# -- queues -------------------------------------------------------------------------------------


@cli.group("queue")
def queue_group() -> None:
    """A queue's settings: the lease its claims get, the deliveries before the dead letter,
    the backoff between retries (kept at the broker, like a cache)."""


@queue_group.command("config", cls=_Command)
@click.argument("prefix", type=str, callback=_text)
@click.option(
    "--lease",
    type=str,
    callback=_duration,
    metavar="DURATION",
    help="What a claim holds an item for when it names no --lease (default 60 s).",
)
@click.option(
    "--max-deliveries",
    type=str,
    callback=_integer(minimum=1),
    metavar="N",
    help="After N hand-outs an item goes to dead.KEY instead (default: no limit).",
)
@click.option(
    "--backoff",
    type=str,
    callback=_backoff,
    metavar="FIRST:CAP",
    help="An item whose lease ran out, or released with no --delay, is claimable again after "
    "FIRST, doubled per delivery up to CAP, jittered down by up to half (like 1s:5m).",
)
@_json_option
@click.pass_context
def queue_config_command(
    ctx: click.Context,
    prefix: str,
    lease: float | None,
    max_deliveries: int | None,
    backoff: tuple[float, float] | None,
    as_json: bool,
) -> None:
    """Set the queue PREFIX's settings and print them (none given: back to the defaults)."""
    status = commands.queue_config(
        _globals(ctx, as_json), prefix, lease=lease, max_deliveries=max_deliveries, backoff=backoff
    )
    _finish(status)


@queue_group.command("show", cls=_Command)
@click.argument("prefix", type=str, callback=_text)
@_json_option
@click.pass_context
def queue_show_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """Print the queue PREFIX's settings, then its counts: ready, delayed, waiting (for other
    keys), claimed, dead, the oldest ready item's age and the redeliveries."""
    _finish(commands.queue_show(_globals(ctx, as_json), prefix))


@cli.command("queues", cls=_Command)
@click.argument("prefix", type=str, default="", callback=_text)
@_json_option
@click.pass_context
def queues_command(ctx: click.Context, prefix: str, as_json: bool) -> None:
    """One line per queue at or below PREFIX: ready, delayed, waiting, claimed, dead, oldest
    ready age, redeliveries."""
    _finish(commands.queues(_globals(ctx, as_json), prefix))


@cli.command("batch", cls=_Command)
@click.option(
    "--atomic",
    is_flag=True,
    help="Run the lines as one transaction: all or nothing (get, set, del, incr, decr only).",
)
@_json_option
@click.pass_context
def batch_command(ctx: click.Context, atomic: bool, as_json: bool) -> None:
    """Run one command a line from stdin, pipelined on one connection, and print one answer a
    line in order (`--json`: one JSON object a line, {"line", "result"} or {"line", "error",
    "message"}).

    \b
    A line is the CLI's own syntax, quoted as in a shell: get, set (with its options), del,
    exists, incr, decr, cas, expire, persist, ttl, claim, ack, release, extend, and --cursor.
    Answers: a value or (nil), OK, 1 or 0, a number, KEY=VALUE token=T for a claim, or
    `ERR CODE: message`. Blank lines and lines starting with # are skipped. Exit 0 if every
    line succeeded, else the status of the first that failed; a line batch cannot run stops it
    before anything is sent (exit 2).
    """
    from . import _cli_batch

    _finish(_cli_batch.batch(_globals(ctx, as_json), _cli_batch.read_lines(), atomic=atomic))


# -- quotas -------------------------------------------------------------------------------------


@cli.group("quota")
def quota_group() -> None:
    """Quotas: what a user may own and hold in a database (keys, bytes, claims; per --cursor)
    and use of the broker (connections, requests per second)."""


def _limit(name: str, help: str) -> Callable[[Any], Any]:
    return click.option(name, type=str, callback=_integer(minimum=0), metavar="N", help=help)


@quota_group.command("set", cls=_Command)
@click.argument("user", type=str, callback=_text)
@_limit("--max-keys", "Keys USER may own in the cursor's database (last written by it).")
@_limit("--max-bytes", "Bytes its values may take there.")
@_limit("--max-claims", "Claims it may hold there at once.")
@_limit("--max-connections", "Connections it may have open to the broker at once.")
@click.option(
    "--rate",
    type=str,
    callback=_seconds(),
    metavar="OPS",
    help="Requests per second it may send, on average (bursts of one second).",
)
@click.option("--clear", is_flag=True, help="Remove all of USER's quotas (here and broker-wide).")
@_json_option
@click.pass_context
def quota_set_command(
    ctx: click.Context,
    user: str,
    max_keys: int | None,
    max_bytes: int | None,
    max_claims: int | None,
    max_connections: int | None,
    rate: float | None,
    clear: bool,
    as_json: bool,
) -> None:
    """Give USER quotas, enforced at once; print them against what it uses (as `quota show`).
    A request past one is refused with quota_exceeded (exit 1) naming the limit."""
    limits = {"max_keys": max_keys, "max_bytes": max_bytes, "max_claims": max_claims}
    wide = {"max_connections": max_connections, "rate": rate}
    if not clear and all(v is None for v in (*limits.values(), *wide.values())):
        raise click.UsageError("Give at least one limit (--max-keys, ...), or --clear.")
    _finish(commands.quota_set(_globals(ctx, as_json), user, limits, wide, clear=clear))


@quota_group.command("show", cls=_Command)
@click.argument("user", type=str, required=False, callback=_text)
@_json_option
@click.pass_context
def quota_show_command(ctx: click.Context, user: str | None, as_json: bool) -> None:
    """Print USER's quotas (default: every user with one in the cursor's database) as
    `USER (cursor C) keys=USED/LIMIT bytes=... claims=... connections=... rate=.../s`."""
    _finish(commands.quota_show(_globals(ctx, as_json), user))
