"""What one broker serves and how: the data directory, its listeners, its fsync policy, its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prontodb.protocol import Limits, split_host_port

from ..engine import HistoryLimits
from ..storage import FsyncPolicy


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """A broker's settings. Paths are taken as given; the CLI resolves the defaults."""

    data_dir: Path
    socket_path: Path | None
    tcp: tuple[str, int] | None = None
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    limits: Limits = field(default_factory=Limits)
    # Writes wait once this many bytes are queued for the writer thread (backpressure).
    max_write_backlog: int = 64 << 20
    # Seconds a stopping broker gives in-flight requests before it fails them.
    shutdown_grace: float = 10.0
    # Unix socket connections must authenticate too (its file mode is the boundary otherwise).
    require_auth: bool = False
    # TCP connections need no token (allowed on a loopback address only).
    insecure: bool = False
    # TLS on TCP (and on an HTTP listener off loopback): the certificate chain and key files.
    tls: tuple[Path, Path] | None = None
    # The HTTP listener of /metrics, /healthz and /readyz (docs/METRICS.md); None: none. Off
    # loopback it needs ``tls`` and every request a user's token.
    http: tuple[str, int] | None = None
    # How much of each database's recent changes watchers may start from (docs/FORMAT.md); a
    # watcher that falls out of this window is cut off with ``overflow``.
    history: HistoryLimits = field(default_factory=HistoryLimits)
    # Seconds with no connection open after which the broker stops by itself (``serve
    # --idle-exit``; the CLI gives its auto-started brokers one); None: never.
    idle_exit: float | None = None
    # Started in the background by a CLI that found none (``prontodb ps`` and status say so).
    auto_started: bool = False
    # The user's roster directory, where the broker lists itself while it runs, for ``prontodb
    # ps`` and ``stop --all`` (``serve`` gives the user's; None: not listed).
    roster: Path | None = None


def parse_tcp(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a pair; ValueError says what is expected."""
    pair = split_host_port(text)
    if pair is None:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:7400, or port 0)")
    return pair
