"""The repository stands alone: nothing a user reads (the README, docs/, examples/) points outside
it, and every relative link in its Markdown reaches a file that is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READ_BY_USERS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(
            p
            for p in (ROOT / "examples").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ),
    ]
)
OUTSIDE = re.compile(r"\.\./shared|CROSS_AGENT_WORKFLOWS|DESIGN\.md")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", READ_BY_USERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        assert not OUTSIDE.search(line), f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


@pytest.mark.parametrize(
    "path", [p for p in READ_BY_USERS if p.suffix == ".md"], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_reach_files_in_the_repository(path: Path) -> None:
    for target in LINK.findall(path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        reached = (path.parent / target).resolve()
        assert reached.exists(), f"{path.relative_to(ROOT)} links to {target}, which is not there"
        assert ROOT in reached.parents or reached == ROOT, f"{target} leaves the repository"
