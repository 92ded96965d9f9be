"""Regenerate docs/dashboard.png: the dashboard of a live broker under a small load, photographed
by headless Chromium (bench/browser.py).

    python -m bench.dashboard_shot [--seconds 45] [--out docs/dashboard.png]

A broker starts with ``--http 127.0.0.1:0`` on a temporary directory; the page opens on it
watching the prefix ``jobs``; then, for ``--seconds``, an orchestrator adds jobs, faster than three
agents take them at first and slower later, so the depth rises and drains; one agent fails every
report it takes, so reports end as dead letters after their two deliveries; the e-mail queue gets
delayed items. At the end two agents hold claims (their leases count down on the page) and an
auditor watches, and the page is saved as a PNG of the whole page. The broker samples depths every
5 s, so the charts show one point per 5 s of the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from prontodb.clients import Client

from .browser import chromium
from .servers import Server, running, start_prontodb

ROOT = Path(__file__).resolve().parent.parent
TICK = 0.5  # seconds between two steps of the load
PAGE_TIMEOUT = 30_000  # ms for the page to show what the load did


@contextmanager
def agents(url: str) -> Iterator[dict[str, Client]]:
    """The load's connections, by user, closed on the way out."""
    names = ("orchestrator", "agent-1", "agent-2", "agent-3", "auditor")
    with ExitStack() as stack:
        yield {name: stack.enter_context(Client.connect(url, user=name)) for name in names}


def run_load(clients: dict[str, Client], seconds: float) -> None:
    """The load the picture shows (the module's docstring): paced by the wall clock on purpose,
    since the depth charts are the broker's samples over time."""
    boss = clients["orchestrator"]
    boss.queue_config("jobs", max_deliveries=2, lease=60)
    boss.queue_config("emails", max_deliveries=3)
    boss.queue_config("reports", max_deliveries=2)
    workers = [clients[f"agent-{n}"] for n in (1, 2, 3)]
    ticks = max(int(seconds / TICK), 4)
    serial = 0
    for tick in range(ticks):
        rising = tick < ticks * 0.45
        for _ in range(4 if rising else 1):
            serial += 1
            boss.set(f"jobs.{serial:05d}", {"task": "resize", "image": f"img-{serial}.png"})
        if tick % 3 == 0:
            boss.set(f"emails.{serial:05d}", {"to": f"user{serial}@example.org"}, delay=600)
        if tick % 4 == 0:
            boss.set(f"reports.{serial:05d}", {"month": tick % 12 + 1})
        for worker in workers:
            for _ in range(1 if rising else 3):
                item = worker.claim("jobs", lease=60)
                if item is not None:
                    worker.ack(item.key, item.token)
        report = workers[2].claim("reports", lease=30)  # agent-3 fails every report it takes:
        if report is not None:  # each is handed out twice, then buried as dead.reports.<id>
            workers[2].release(report.key, report.token)
        time.sleep(TICK)
    for _ in range(8):  # the last batch: some are still waiting when the picture is taken
        serial += 1
        boss.set(f"jobs.{serial:05d}", {"task": "thumbnail", "image": f"img-{serial}.png"})
    for worker, lease in ((workers[0], 90.0), (workers[1], 40.0), (workers[0], 75.0)):
        worker.claim("jobs", lease=lease)  # held at the end: counting down on the page


def shoot(out: Path, seconds: float, work: Path) -> None:
    """Run the load against a fresh broker with the page open, then save the page to ``out``."""
    from playwright.sync_api import sync_playwright  # a test-extra dependency

    (work / "broker").mkdir()
    server: Server = start_prontodb(work / "broker", extra=["--http", "127.0.0.1:0"])
    with running(server), chromium(work / "profile") as browser, sync_playwright() as pw:
        page = (
            pw.chromium.connect_over_cdp(browser.endpoint)
            .new_context(viewport={"width": 1400, "height": 900})
            .new_page()
        )
        page.goto(f"http://{server.ready['http']}/?cursor=default&prefix=jobs")
        page.wait_for_selector("#stream-state[data-state=live]", timeout=PAGE_TIMEOUT)
        with agents("unix://" + server.socket) as clients:
            watch = clients["auditor"].watch("jobs")
            with watch:
                run_load(clients, seconds)
                page.wait_for_selector("#claims tbody tr", timeout=PAGE_TIMEOUT)
                page.wait_for_selector("#dead tbody tr", timeout=PAGE_TIMEOUT)
                page.wait_for_function(
                    "document.querySelectorAll('#agents tbody tr').length >= 5",
                    timeout=PAGE_TIMEOUT,
                )
                page.screenshot(path=str(out), full_page=True)
    print(f"saved {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="how long the load runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prontodb-shot-") as work:
        shoot(args.out, args.seconds, Path(work))


if __name__ == "__main__":
    main()
