"""Rewrite one benchmark's section of docs/BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

import platform
import re
import sys
import time
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


def update_section(name: str, body: str) -> None:
    """Replace the section between the markers for ``name`` (appending it if it is new)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
