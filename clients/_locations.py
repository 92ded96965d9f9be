"""Where the broker keeps its data and listens by default; stdlib only, so the CLI starts fast.

The data directory is ``$PRONTODB_DATA_DIR``, else ``$XDG_DATA_HOME/prontodb``, else
``~/.local/share/prontodb``. The socket is ``$PRONTODB_SOCKET``, else a file named after the data
directory under ``$XDG_RUNTIME_DIR/prontodb`` (a 0700 directory), else ``broker.sock`` in the data
directory. Naming the runtime socket after the data directory gives each data directory its own
broker, so ``PRONTODB_DATA_DIR=/tmp/x prontodb ...`` never talks to the broker of another directory.

Every broker ``prontodb serve`` runs lists itself in the user's roster, a directory that
``prontodb ps`` reads: ``$XDG_RUNTIME_DIR/prontodb/brokers``, else
``$XDG_STATE_HOME/prontodb/brokers`` (``~/.local/state/prontodb/brokers``).
"""

from __future__ import annotations

import os

# sun_path holds 108 bytes on Linux (104 on the BSDs), the terminating NUL included.
MAX_SOCKET_PATH = 103


def default_data_dir() -> str:
    """The data directory the environment names (made absolute; not created)."""
    explicit = os.environ.get("PRONTODB_DATA_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(os.path.abspath(base), "prontodb")


def default_socket_path(data_dir: str) -> str:
    """The Unix socket of the broker serving ``data_dir``, as the environment names it."""
    explicit = os.environ.get("PRONTODB_SOCKET")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        # crc32, not a cryptographic hash: it only tells one user's data directories apart, and
        # hashlib would cost the CLI 2 ms of start-up. Imported here: a command given its socket
        # ($PRONTODB_SOCKET, --url) does not load the extension.
        import zlib

        digest = zlib.crc32(os.fsencode(os.path.abspath(data_dir)))
        return os.path.join(os.path.abspath(runtime), "prontodb", f"broker-{digest:08x}.sock")
    return os.path.join(data_dir, "broker.sock")


def default_url() -> str:
    """``$PRONTODB_URL``, else the default socket of the default data directory."""
    return os.environ.get("PRONTODB_URL") or "unix://" + default_socket_path(default_data_dir())


ROSTER = os.path.join("prontodb", "brokers")


def _runtime_dir() -> str | None:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.abspath(runtime) if runtime and os.path.isdir(runtime) else None


def _state_roster() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(os.path.abspath(state), ROSTER)


def roster_dir() -> str:
    """Where a broker started now lists itself: the runtime directory's roster, else the state
    directory's (not created)."""
    runtime = _runtime_dir()
    return os.path.join(runtime, ROSTER) if runtime else _state_roster()


def roster_dirs() -> list[str]:
    """Where ``ps`` looks: both rosters, since a broker started from a session with another
    environment (a cron job, a service without $XDG_RUNTIME_DIR) lists itself in the other."""
    found = [roster_dir(), _state_roster()]
    return found[:1] if found[0] == found[1] else found
