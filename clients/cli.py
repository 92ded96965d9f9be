"""The ``prontodb`` command line. Its commands arrive with the broker; for now it only says so."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="prontodb")
def main() -> None:
    """ProntoDB: a coordination broker for agent fleets."""
