"""bench/metrics_cost.py: its verdict follows the rounds it measured, and its baseline is the
named revision's code, runnable on its own PYTHONPATH."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.metrics_cost import Runs, Scraper, baseline_tree, report

INFO = {
    "date": "today",
    "arch": "x86_64",
    "cores": "2",
    "cpu": "cpu",
    "disk": "disk",
    "fsync": "0.1",
    "python": "3",
    "load": "0",
}


def args(baseline: str = "") -> argparse.Namespace:
    return argparse.Namespace(
        baseline=baseline, clients=50, fsync="always", warmup=1.0, seconds=3.0, rounds=2
    )


def test_the_verdict_is_the_median_of_each_rounds_loss() -> None:
    runs = {
        "before": Runs([1000.0, 2000.0], [100.0, 100.0]),
        "counting": Runs([990.0, 1980.0], [101.0, 101.0]),
        "scraped": Runs([980.0, 1900.0], [102.0, 102.0]),
    }
    text = report(runs, Scraper("http://x"), args("abc123"), INFO)
    assert "| before the metrics (`abc123`) | 1,500 | 1,000, 2,000 | 100.0 |" in text
    assert "Scraping every second: +2.5% of the set throughput lost" in text
    assert "**met**" in text
    assert "+1.0% of the throughput lost against the code before" in text
    runs["scraped"] = Runs([900.0, 1800.0], [110.0, 110.0])
    assert "**not met**" in report(runs, Scraper("http://x"), args(), INFO)


def test_the_baseline_is_the_revisions_code(tmp_path: Path) -> None:
    env = baseline_tree("HEAD", tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import prontodb.broker.server as s; print(s.__file__)"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith(str(tmp_path))
