"""The ``prontodb`` command line (click). Imports neither trio nor anyio: ``serve`` loads the
broker only when it runs."""

from __future__ import annotations

import click

from ._locations import default_data_dir, default_socket_path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prontodb")
def main() -> None:
    """ProntoDB: a coordination broker for agent fleets."""


@main.command()
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
    "--fsync",
    type=click.Choice(["always", "interval", "never"]),
    default="always",
    show_default=True,
    help="When a write counts as durable: after its fsync, within a second, or when the OS writes it.",
)
@click.option("--ready-fd", type=int, hidden=True, help="Write one JSON line here once listening.")
def serve(
    data_dir: str | None,
    socket_path: str | None,
    tcp: str | None,
    fsync: str,
    ready_fd: int | None,
) -> None:
    """Run the broker in the foreground until SIGTERM, SIGINT or `prontodb stop`."""
    import os
    from pathlib import Path

    from prontodb.broker.server import ServerConfig, parse_tcp, run
    from prontodb.broker.storage import FsyncPolicy

    data = os.path.abspath(data_dir) if data_dir else default_data_dir()
    sock = os.path.abspath(socket_path) if socket_path else default_socket_path(data)
    try:
        tcp_address = parse_tcp(tcp) if tcp else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tcp") from None
    config = ServerConfig(
        data_dir=Path(data),
        socket_path=Path(sock),
        tcp=tcp_address,
        fsync=FsyncPolicy(fsync),
    )
    raise SystemExit(run(config, ready_fd=ready_fd))


if __name__ == "__main__":
    main()
