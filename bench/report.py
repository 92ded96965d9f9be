"""Rewrite one benchmark's section of docs/BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Written by `./scripts/bench.sh` (each benchmark rewrites its own section). Figures are from one run on
the machine named in the section: compare ratios, not absolute numbers, across machines.
"""


def machine() -> str:
    """A one-line description of where the figures came from."""
    cores = len(__import__("os").sched_getaffinity(0))
    return f"{platform.machine()}, {cores} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"


def update_section(
    name: str, body: str, path: Path = BENCHMARKS_MD, header: str = HEADER, tag: str = "bench"
) -> None:
    """Replace the section between the markers for ``name`` in ``path`` (appending it if it is
    new; a new file starts with ``header``)."""
    start, end = f"<!-- {tag}:{name} -->", f"<!-- /{tag}:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else header
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def run_and_report(
    section: str, info: dict[str, str], tmp_dir: str, no_report: bool, produce: Callable[[], str]
) -> None:
    """Run a benchmark (``produce`` returns its report), print the report and the time it took,
    and write it into its section of docs/BENCHMARKS.md unless ``no_report``; warns first when
    ``tmp_dir`` is on tmpfs (``info`` says), where fsync costs nothing."""
    if info["tmpfs"] == "yes":
        print(f"warning: {tmp_dir} is on tmpfs, fsync costs nothing there", file=sys.stderr)
    began = time.monotonic()
    text = produce()
    print()
    print(text)
    print(f"\n(total {time.monotonic() - began:.0f} s)")
    if not no_report:
        update_section(section, text)
