"""``prontodb top``: a live view of a broker, redrawn every interval from its ``stats``.

The numbers are ``_top_model``'s; this module polls, draws and reads keys. It is the only module
that imports rich, and only the ``top`` command imports it, so no other command pays for it at
start-up (docs/CLI.md, "Start-up time").

The live view draws on the terminal's alternate screen (rich's ``Live``), reads keys unechoed
(``q`` quits), and puts the terminal back however it ends, Ctrl-C included. A broker that goes
away is said so on screen, and asked again every interval until it answers.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from prontodb.protocol import ErrorCode, ProntoError

from . import _cli_commands as commands
from . import _top_model as model

if TYPE_CHECKING:
    from ._sync.client import Client

ONCE_WIDTH = 160  # columns of `--once` printed to a pipe or file (no terminal to measure)
QUIT_KEYS = b"qQ"


class Poller:
    """The broker's snapshots, one a call, over one connection, opened again once lost.

    Only the first connection may start the default broker, as any command's does: a broker that
    went away later was stopped by someone, and ``top`` waits for it rather than start another.
    """

    def __init__(self, options: commands.Globals) -> None:
        self.options = options
        self.client: Client | None = None
        self.tried = False
        self.error: str | None = None  # why the last call had no snapshot

    def take(self) -> dict[str, Any] | None:
        """A snapshot, or None when no broker answers (``error`` says why). Other errors (a
        token refused) are raised: asking again would not help."""
        try:
            if self.client is None:
                start, self.tried = not self.tried, True
                self.client = commands.connect(self.options, start=start)
            snapshot = self.client.stats()
        except ProntoError as exc:
            if exc.code is not ErrorCode.UNAVAILABLE:
                raise
            self.close()
            self.error = exc.message
            return None
        except OSError as exc:  # the connection broke in a way the client did not name
            self.close()
            self.error = str(exc) or type(exc).__name__
            return None
        self.error = None
        return snapshot

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except (ProntoError, OSError):
                pass  # it is gone already

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Keys:
    """Keys typed while ``top`` waits for its next frame (None: stdin is not a terminal)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as a quit key is typed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.fd is None:
                time.sleep(left)  # the refresh interval itself: nothing to read meanwhile
                break
            readable, _, _ = select.select([self.fd], [], [], left)
            if not readable:
                break
            typed = os.read(self.fd, 64)
            if not typed:  # the terminal hung up: no more keys will come
                self.fd = None
            elif any(key in QUIT_KEYS for key in typed):
                return True
        return False


@contextmanager
def keyboard() -> Iterator[Keys]:
    """Keys from the terminal, one at a time and unechoed (cbreak: Ctrl-C still interrupts),
    with the terminal's mode restored on the way out."""
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        yield Keys(None)
        return
    import termios
    import tty

    fd = stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- the commands ------------------------------------------------------------------------------


def top(options: commands.Globals, interval: float, *, once: bool = False) -> int:
    """``top [--interval S] [--once] [--json]``: the view, live until ``q`` or Ctrl-C; with
    ``--once``, one frame over one interval; with ``--json``, one object per interval. To a
    pipe or a file, a frame is printed every interval instead of redrawn."""
    try:
        if options.json:
            return _frames(options, interval, once, lambda f: commands.write_json(f.as_json()))
        if once or not sys.stdout.isatty():
            return _frames(options, interval, once, _printer(options, interval))
        return _live(options, interval)
    except ProntoError as exc:
        return commands.fail(exc)


def _frames(
    options: commands.Globals, interval: float, once: bool, emit: Callable[[model.Frame], None]
) -> int:
    """Hand ``emit`` a frame every interval, each over the interval before it: the first after
    one interval, and the first after a restart of the broker one interval after it is back.
    No broker at the start (or, with ``once``, at all) is an error; an outage later is a note
    on stderr, once, and the frames go on once it is back."""
    with Poller(options) as poller:
        previous = _required(poller)
        deadline = time.monotonic()
        while True:
            deadline = max(deadline + interval, time.monotonic())
            time.sleep(max(0.0, deadline - time.monotonic()))  # the interval the rates cover
            lost = poller.error
            current = _required(poller) if once else poller.take()
            if current is None:
                if lost is None:
                    commands.say(f"{poller.error} Asking again every {interval:g} s.")
                continue
            if lost is not None:
                commands.say("The broker answers again.")
            if model.comparable(previous, current):
                emit(model.frame(current, previous))
                if once:
                    return 0
            previous = current


def _required(poller: Poller) -> dict[str, Any]:
    snapshot = poller.take()
    if snapshot is None:
        raise ProntoError(ErrorCode.UNAVAILABLE, poller.error or "No broker answers.")
    return snapshot


def _printer(options: commands.Globals, interval: float) -> Callable[[model.Frame], None]:
    """Print each frame whole (no redrawing: a pipe or a file), a blank line between two."""
    console = _console()
    url = commands.target_url(options)
    printed = False

    def emit(frame: model.Frame) -> None:
        nonlocal printed
        if printed:
            console.print()
        console.print(draw(frame, url, interval, None, console.width, None))
        printed = True

    return emit


def _live(options: commands.Globals, interval: float) -> int:
    url = commands.target_url(options)
    console = Console()
    previous: dict[str, Any] | None = None
    shown: model.Frame | None = None
    seen = time.monotonic()  # when `shown` was taken
    with (
        Poller(options) as poller,
        keyboard() as keys,
        Live(console=console, screen=True, auto_refresh=False) as view,
    ):
        deadline = time.monotonic()
        while True:
            current = poller.take()
            if current is not None:
                shown, previous, seen = model.frame(current, previous), current, time.monotonic()
            lost = None if poller.error is None else (poller.error, time.monotonic() - seen)
            width, height = console.size
            view.update(draw(shown, url, interval, lost, width, height), refresh=True)
            deadline = max(deadline + interval, time.monotonic())
            if keys.wait(deadline - time.monotonic()):
                return 0


def _console() -> Console:
    """The console frames are printed to: the terminal's width, or a wide one for a pipe."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=ONCE_WIDTH)


# -- drawing -----------------------------------------------------------------------------------

HEADER = "bold reverse"
TABLE_ROWS_FIXED = 2  # each table's header line, and the blank line before it
WIDE = 130  # columns from which the databases' table shows their claim rates too


def draw(
    frame: model.Frame | None,
    url: str,
    interval: float,
    lost: tuple[str, float] | None,
    width: int,
    height: int | None,
) -> RenderableType:
    """One screen: the title, the totals, then a table each for operations, connections,
    queues, watchers and databases, for a terminal ``width`` columns wide; with ``height``,
    each table is cut to fit (``… N more``). ``lost``: why no broker answers now, and how old
    ``frame`` is."""
    head = [_title(frame, url, interval)]
    if lost is not None:
        why, old = lost
        note = f"{why.strip()} Asking again every {interval:g} s"
        if frame is not None:
            note += f"; the figures below are {model.age(old)} old"
        head.append(Text(note + ".", style="bold red"))
    if frame is None:
        return Group(*head)
    head.append(_totals(frame))
    if frame.interval is None:
        head.append(Text(f"Rates since the broker started; next, over each {interval:g} s."))
    tables = _tables(frame, width)
    wanted = [max(1, len(rows)) for _, rows in tables]
    given = wanted
    if height is not None:
        used = sum(_lines(text, width) for text in head) + TABLE_ROWS_FIXED * len(tables)
        given = model.budget(height - used, wanted)
    parts: list[RenderableType] = [*head]
    for (table, rows), room in zip(tables, given, strict=True):
        parts += [Text(""), _fill(table, rows, room)]
    return Group(*parts)


def _lines(text: Text, width: int) -> int:
    """The screen lines ``text`` takes, wrapped at ``width``."""
    return sum(max(1, -(-len(line) // max(1, width))) for line in text.plain.split("\n"))


def _title(frame: model.Frame | None, url: str, interval: float) -> Text:
    text = Text("prontodb top", style="bold")
    text.append(f"  {url}")
    if frame is not None:
        text.append(f"  pid {frame.pid if frame.pid is not None else '-'}")
        text.append(f"  up {model.age(frame.uptime)}")
    text.append(f"  every {interval:g} s  (q quits)", style="dim")
    return text


def _totals(frame: model.Frame) -> Text:
    """Three lines: requests and claims; the disk's pace and size; the process and who is
    connected. Claim rates are summed over the databases."""
    dbs = frame.databases
    cpu = "-" if frame.cpu_percent is None else f"{frame.cpu_percent:.0f}%"
    records = "-" if frame.commit_records is None else f"{frame.commit_records:.1f}"
    untracked = f"  untracked {frame.untracked}" if frame.untracked else ""
    return Text(
        f"requests {model.rate(frame.requests)}/s  errors {model.rate(frame.errors)}/s  "
        f"claims {model.rate(sum(db.claims for db in dbs))}/s  "
        f"redelivered {model.rate(sum(db.redeliveries for db in dbs))}/s  "
        f"dead {model.rate(sum(db.dead_letters for db in dbs))}/s  "
        f"expired {model.rate(sum(db.expired_leases for db in dbs))}/s\n"
        f"fsyncs {model.rate(frame.fsyncs)}/s  fsync p99 {model.duration(frame.fsync_p99)}  "
        f"records/commit {records}  disk {model.size(frame.disk_bytes)}\n"
        f"cpu {cpu}  memory {model.size(frame.rss_bytes)}  "
        f"connections {frame.connections}  watchers {frame.watchers}{untracked}"
    )


Row = list[str]
_LEFT = ("OP", "USER", "TRANSPORT", "CURSOR", "QUEUE", "PREFIX")


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style=HEADER, pad_edge=False, padding=(0, 2, 0, 0))
    for name in columns:
        justify: Literal["left", "right"] = "left" if name in _LEFT else "right"
        table.add_column(name, justify=justify, no_wrap=True)
    return table


def _tables(frame: model.Frame, width: int) -> list[tuple[Table, list[Row]]]:
    ops = [
        [r.op, model.rate(r.rate), model.rate(r.errors), model.duration(r.p99), str(r.total)]
        for r in frame.ops
    ]
    users = [[r.user, r.transport, str(r.connections), str(r.watchers)] for r in frame.users]
    queues = [
        [
            q.cursor,
            q.queue,
            *(str(n) for n in (q.ready, q.delayed, q.claimed, q.dead, q.waiting)),
            model.age(q.oldest_ready_age),
        ]
        for q in frame.queues
    ]
    watches = [
        [w.cursor, w.user, w.prefix or "(all)", str(w.lag), str(w.next_rev)] for w in frame.watches
    ]
    wide = width >= WIDE
    databases = ["CURSOR", "REVISION", "WRITES/S", "KEYS", "DISK", "IN FLIGHT"]
    if wide:
        databases += ["CLAIMS/S", "REDELIVERED/S", "DEAD/S", "EXPIRED/S"]
    return [
        (_table("OP", "OPS/S", "ERR/S", "P99", "TOTAL"), ops),
        (_table("USER", "TRANSPORT", "CONNECTIONS", "WATCHERS"), users),
        (
            _table("CURSOR", "QUEUE", "READY", "DELAYED", "CLAIMED", "DEAD", "WAITING", "OLDEST"),
            queues,
        ),
        (_table("CURSOR", "USER", "PREFIX", "LAG", "NEXT REV"), watches),
        (
            _table(*databases, "WATCHERS", "OVERFLOWS"),
            [_database_row(db, wide) for db in frame.databases],
        ),
    ]


def _database_row(db: model.DatabaseRow, wide: bool) -> Row:
    name = db.cursor if db.failed is None else f"{db.cursor} (failing: {db.failed})"
    row = [
        name,
        str(db.revision),
        model.rate(db.writes),
        str(db.keys),
        model.size(db.disk_bytes),
        str(db.claims_in_flight),
    ]
    if wide:
        rates = (db.claims, db.redeliveries, db.dead_letters, db.expired_leases)
        row += [model.rate(n) for n in rates]
    return [*row, str(db.watchers), str(db.watch_overflows)]


def _fill(table: Table, rows: list[Row], room: int) -> Table:
    """``table`` with as many of ``rows`` as ``room`` holds, the last saying how many did not."""
    if not rows:
        table.add_row("(none)", style="dim")
        return table
    shown = rows if len(rows) <= room else rows[: max(0, room - 1)]
    for row in shown:
        table.add_row(*row)
    if len(shown) < len(rows):
        table.add_row(f"… {len(rows) - len(shown)} more", style="dim")
    return table
