"""The CLI's locks, semaphores, elections and barriers (docs/RECIPES.md), and ``session run``.

With a command (``prontodb lock NAME -- CMD``) the CLI holds a session of its own, bound to its
connection, for as long as CMD runs: it renews the session from its main thread between waits on
CMD, so no thread exists when CMD is started (the parent-death signal is set between fork and exec,
which is only safe with one thread). If the session is lost, CMD gets SIGTERM and the command exits
with EXIT_LOST; if the CLI dies, even by SIGKILL, the kernel sends CMD SIGTERM (PR_SET_PDEATHSIG) and
the broker ends the session as the connection closes. Without a command the membership outlives the
CLI for its TTL (or its ``--session``'s life) and the token is printed.
"""

from __future__ import annotations

import os
import signal
import sys

from ._cli_commands import Globals, render, run, say, write, write_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence
    from typing import Any

    from ._sync.client import Client
    from ._types import Member

EXIT_TIMED_OUT = 4  # as every wait that runs out (the error table's timed_out)
EXIT_LOST = 6  # the lock (slot, leadership) was lost while CMD ran: CMD was sent SIGTERM
FOREVER = 86_400.0  # "wait as long as it takes": the broker's longest wait
TERM_GRACE = 10.0  # seconds CMD has to exit after SIGTERM before it is killed
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function that asks the kernel to SIGTERM the child when this process dies
    (Linux); None elsewhere. libc is looked up before the fork, so the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(EXIT_LOST)

    return arm


def supervise(
    client: Client,
    session: int,
    ttl: float,
    command: Sequence[str],
    env: dict[str, str],
    what: str,
) -> int:
    """Run ``command`` with ``env`` added, renewing ``session`` every ``ttl``/3 seconds; CMD's
    exit status, or EXIT_LOST (CMD sent SIGTERM) once a renewal fails."""
    # Here, not at the top: `unlock`, on the fast path, comes from this module too.
    import subprocess

    from prontodb.protocol import ProntoError

    child_env = {**os.environ, **env}
    try:
        child = subprocess.Popen(list(command), env=child_env, preexec_fn=_parent_death_signal())
    except OSError as exc:
        say(f"error: cannot run {command[0]!r}: {exc.strerror}")
        return 127 if isinstance(exc, FileNotFoundError) else 126
    forwarded = _forward_signals(child)
    try:
        while True:
            try:
                return _status(child.wait(timeout=ttl / 3))
            except subprocess.TimeoutExpired:
                pass
            try:
                client.session_keepalive(session)
            except ProntoError as exc:
                say(f"error: {what} was lost ({exc.message}); stopping the command (SIGTERM)")
                child.terminate()
                try:
                    child.wait(timeout=TERM_GRACE)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                return EXIT_LOST
    finally:
        for signum, previous in forwarded.items():
            signal.signal(signum, previous)


def _forward_signals(child: subprocess.Popen[bytes]) -> dict[int, Any]:
    """Pass SIGTERM, SIGINT and SIGHUP on to ``child`` (then wait for it as usual): the CLI
    ends with its command, and releases what it held only once CMD has stopped."""

    def forward(signum: int, frame: object) -> None:
        child.send_signal(signum)

    return {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def _status(returncode: int) -> int:
    """A child's exit status as a shell reports it (128 + N when killed by signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def hold(
    options: Globals,
    recipe: str,
    name: str,
    command: Sequence[str],
    *,
    limit: int = 1,
    value: Any = None,
    wait: float | None = None,
    ttl: float = 10.0,
    session: int | None = None,
    outlive: bool = True,
) -> int:
    """``lock``/``semaphore``/``elect``/``barrier``: join ``name``, wait for the turn, then run
    ``command`` while holding it (exit: CMD's status), or print the token (no command; the
    membership then outlives the CLI, unless ``outlive`` is false: a barrier's party leaves)."""
    from ._sync_backend import Renewing

    what = f"{recipe} {name}"

    def body(client: Client) -> int:
        own = session is None
        bound = bool(command) or not outlive
        kept = client.session_grant(ttl, bound=bound) if own else session
        assert kept is not None

        def renew() -> None:
            client.session_keepalive(kept)

        def lost(failure: Exception) -> Exception:
            return failure

        waiting = FOREVER if wait is None else wait
        try:
            if own and waiting > ttl / 3:  # keep it alive while waiting in line
                with Renewing(renew, ttl / 3, lost):
                    held = client.acquire(
                        name, recipe, kept, limit=limit, value=value, wait=waiting
                    )
            else:
                held = client.acquire(name, recipe, kept, limit=limit, value=value, wait=waiting)
            if held is None:
                say(
                    f"timed out: {what} was not acquired within {waiting:g} s (see `holders {name}`)"
                )
                return EXIT_TIMED_OUT
            if not command:
                if outlive:
                    _print_member(options, held)
                    own = False  # it outlives this process
                elif options.json:
                    write_json(held._asdict())
                return 0
            env = _exported(options)
            env |= {"PRONTODB_FENCE": str(held.token), "PRONTODB_FENCE_NAME": name}
            if own:
                env["PRONTODB_SESSION"] = str(kept)
            return supervise(client, kept, ttl, command, env, what)
        finally:
            if own:
                _revoke_quietly(client, kept)

    return run(options, body)


def _exported(options: Globals) -> dict[str, str]:
    """The global options for CMD's own prontodb calls: the same broker, user and database
    (a session, and so a fence, belongs to one database)."""
    env = {"PRONTODB_CURSOR": options.cursor}
    if options.url is not None:
        env["PRONTODB_URL"] = options.url
    if options.user is not None:
        env["PRONTODB_USER"] = options.user
    return env


def _revoke_quietly(client: Client, session: int) -> None:
    from prontodb.protocol import ProntoError

    try:
        client.session_revoke(session)
    except ProntoError:
        pass  # ended already (lost), or the connection is gone: the broker ends it anyway


def _print_member(options: Globals, member: Member) -> None:
    if options.json:
        write_json(member._asdict())
    else:
        write(f"{member.token}\n".encode())


def unlock(options: Globals, name: str, token: int) -> int:
    """``unlock NAME --token T`` (and ``resign``): silent; a token not there exits 3."""

    def body(client: Client) -> int:
        left = client.unlock(name, token)
        if options.json:
            write_json({"name": name, "token": token, "released": left})
        if not left:
            from prontodb.protocol import ERROR_TABLE, ErrorCode  # here: the fast path's cost

            say(
                f"not held: {name} has no member with token {token} (released, or its session ended)"
            )
            return ERROR_TABLE[ErrorCode.NOT_FOUND].exit_status
        return 0

    return run(options, body, wire=True)


def proclaim(options: Globals, name: str, token: int, value: Any) -> int:
    """``proclaim NAME --token T VALUE``: silent; not the leader any more exits 5."""

    def body(client: Client) -> int:
        member = client.proclaim(name, token, value)
        if options.json:
            write_json(member._asdict())
        return 0

    return run(options, body)


def _member_line(member: Member) -> str:
    state = "holding" if member.holding else "waiting"
    return (
        f"{member.token} {state} session={member.session} writer={member.writer} "
        f"value={render(member.value).decode()}\n"
    )


def holders(options: Globals, name: str) -> int:
    """``holders NAME``: a header line, then one line per member in line; none: exit 3."""
    from prontodb.protocol import ERROR_TABLE, ErrorCode

    def body(client: Client) -> int:
        state = client.holders(name)
        if state is None:
            if options.json:
                write_json(None)
            say(f"nobody holds or waits for {name} (cursor {options.cursor})")
            return ERROR_TABLE[ErrorCode.NOT_FOUND].exit_status
        if options.json:
            write_json({**state._asdict(), "members": [m._asdict() for m in state.members]})
        else:
            lines = [f"{state.name} {state.recipe} limit={state.limit}\n"]
            lines += [_member_line(m) for m in state.members]
            write("".join(lines).encode())
        return 0

    return run(options, body)


def locks(options: Globals, prefix: str = "") -> int:
    """``locks [PREFIX]``: one line per recipe: name, kind, limit, holders, waiting."""

    def body(client: Client) -> int:
        found = client.locks(prefix)
        if options.json:
            write_json(
                [{**r._asdict(), "members": [m._asdict() for m in r.members]} for r in found]
            )
        else:
            lines = (
                f"{r.name} {r.recipe} limit={r.limit} holding={len(r.holders)} "
                f"waiting={len(r.members) - len(r.holders)}\n"
                for r in found
            )
            write("".join(lines).encode())
        return 0

    return run(options, body)


def leader(options: Globals, name: str) -> int:
    """``leader NAME``: the leader's value and term (``term=T value``); nobody leads: exit 3."""
    from prontodb.protocol import ERROR_TABLE, ErrorCode

    def body(client: Client) -> int:
        member = client.leader(name)
        if options.json:
            write_json(None if member is None else member._asdict())
        if member is None:
            say(f"no leader: nobody leads {name} (cursor {options.cursor})")
            return ERROR_TABLE[ErrorCode.NOT_FOUND].exit_status
        if not options.json:
            write(b"term=%d " % member.token + render(member.value) + b"\n")
        return 0

    return run(options, body)


def observe(options: Globals, name: str, *, count: int | None = None) -> int:
    """``observe NAME``: the leader now, then one line per change (``-`` when nobody leads)."""

    def body(client: Client) -> int:
        seen = 0
        with client.observe(name) as leaders:
            for member in leaders:
                if options.json:
                    write_json(None if member is None else member._asdict())
                elif member is None:
                    write(b"-\n")
                else:
                    write(b"term=%d " % member.token + render(member.value) + b"\n")
                seen += 1
                if count is not None and seen >= count:
                    break
        return 0

    return run(options, body)


def session_run(options: Globals, ttl: float, command: Sequence[str]) -> int:
    """``session run --ttl S -- CMD``: a session kept alive while CMD runs, its id in
    ``$PRONTODB_SESSION`` (``set KEY VALUE --session $PRONTODB_SESSION`` attaches keys to it);
    revoked when CMD exits (its keys deleted). Exit: CMD's status, or EXIT_LOST."""

    def body(client: Client) -> int:
        session = client.session_grant(ttl, bound=True)
        try:
            env = _exported(options) | {"PRONTODB_SESSION": str(session)}
            return supervise(client, session, ttl, command, env, f"session {session}")
        finally:
            _revoke_quietly(client, session)

    return run(options, body)
