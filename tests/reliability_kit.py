"""What the reliability suite (tests/reliability/) shares: its scale and the figures it reports.

Every case asserts its property (nothing acknowledged lost, no wrong value, every refusal clear,
nothing wrongly allowed) and also counts what it checked, so that docs/RELIABILITY.md can say
how much was tried: ``figures["writes checked"] = n``. Counts named in :data:`MUST_BE_ZERO`
are the failures a case looks for; the report shows them beside the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The figures whose only acceptable value is 0 (a case asserts it, the report shows it).
MUST_BE_ZERO = ("lost", "wrong values", "unclear", "wrongly allowed", "crashes", "leaked fds")


@dataclass(frozen=True, slots=True)
class Scale:
    """The quick suite (./scripts/test.sh) or the long one (./scripts/torture.sh)."""

    torture: bool

    def pick(self, quick: int, torture: int) -> int:
        """``quick`` in the test run, ``torture`` under torture.sh."""
        return torture if self.torture else quick


@dataclass(slots=True)
class Figures:
    """The figures of one case: ``figures.scenario = "kill -9 cycles"`` names the table it goes
    in (one row per case), ``figures["cycles"] = 10`` sets a column, ``figures.add(...)`` counts."""

    case: str
    scenario: str = ""
    values: dict[str, int | float | str] = field(default_factory=dict)

    def __setitem__(self, name: str, value: int | float | str) -> None:
        self.values[name] = value

    def __getitem__(self, name: str) -> int | float | str:
        return self.values[name]

    def add(self, name: str, by: int = 1) -> None:
        """Count ``by`` more of ``name`` (from 0)."""
        current = self.values.get(name, 0)
        assert isinstance(current, int)
        self.values[name] = current + by

    def as_dict(self) -> dict[str, object]:
        return {"case": self.case, "scenario": self.scenario or self.case, "figures": self.values}


def render(cases: list[dict[str, object]], command: str, machine: str) -> str:
    """The figures as docs/RELIABILITY.md shows them: one table per scenario, one row per case."""
    scenarios: dict[str, list[dict[str, object]]] = {}
    for case in cases:
        scenarios.setdefault(str(case["scenario"]), []).append(case)
    lines = [f"## Figures ({machine})", "", f"Command: `{command}`."]
    failures = 0
    for scenario, rows in scenarios.items():
        columns: list[str] = []
        for row in rows:
            figures = row["figures"]
            assert isinstance(figures, dict)
            columns += [name for name in figures if name not in columns]
        # The must-be-zero columns last, so every table ends with what went wrong.
        columns.sort(key=lambda name: name in MUST_BE_ZERO)
        lines += ["", f"### {scenario}", "", "| case | " + " | ".join(columns) + " |"]
        lines.append("| --- |" + " ---: |" * len(columns))
        for row in rows:
            figures = row["figures"]
            assert isinstance(figures, dict)
            cells = [_cell(figures.get(name, "")) for name in columns]
            failures += sum(1 for n in columns if n in MUST_BE_ZERO and figures.get(n, 0) != 0)
            lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    lines += ["", f"Non-zero failure counts: **{failures}**."]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def main(argv: list[str]) -> int:
    """``python tests/reliability_kit.py FIGURES.json COMMAND``: rewrite the figures section of
    docs/RELIABILITY.md (the prose around it stays)."""
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    from bench.report import machine, update_section

    cases = json.loads(Path(argv[0]).read_text())
    body = render(cases, argv[1], machine())
    update_section(
        "figures",
        body,
        path=root / "docs" / "RELIABILITY.md",
        header="# Reliability\n",
        tag="reliability",
    )
    print(body)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
