"""The dashboard in a real browser: headless Chromium (Debian's package, bench/browser.py) driven
by Playwright loads the page of a live broker process, a load runs, and the DOM must show the
depths, the claims with their countdowns, the dead letters, the agents and the change stream, and
the stream must resume where it was after the broker restarts. Every wait is on a DOM condition
with a timeout; the broker and the browser are stopped by pid however the test ends. The test
saves a screenshot in its tmp dir (bench/dashboard_shot.py makes the README's).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from brokers import BrokerProcess, running_broker

from bench.browser import chromium, chromium_path
from prontodb.broker.database import Database
from prontodb.clients import Client

WAIT = 30_000  # ms for the page to show what happened: it polls every 2 s


def _browser_or_skip() -> Any:
    """Playwright's sync API, or a skip saying what is missing (a failure on CI, which installs
    both: there a missing browser must not pass as a skipped test)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing is None and chromium_path() is None:
        missing = "chromium is not installed (apt-get install chromium; .ci/run installs it)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


def admin_token(broker: BrokerProcess) -> str:
    return (broker.data_dir / "admin.token").read_text().strip()


def cell(page: Any, queue: str, field: str) -> str:
    text: str = page.text_content(f'#queues tr[data-queue="default/{queue}"] [data-field={field}]')
    return text


def wait_text(page: Any, selector: str, text: str) -> None:
    """Until the element ``selector`` shows exactly ``text``."""
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
        timeout=WAIT,
    )


def test_the_page_shows_the_fleet_and_follows_its_changes(tmp_path: Path, short_dir: Path) -> None:
    sync_playwright = _browser_or_skip()
    data = tmp_path / "data"
    started = time.monotonic()
    with (
        running_broker(data, short_dir / "b.sock", extra=["--http", "127.0.0.1:0"]) as broker,
        chromium(tmp_path / "profile") as browser,
        sync_playwright() as pw,
    ):
        assert broker.http is not None
        page = (
            pw.chromium.connect_over_cdp(browser.endpoint)
            .new_context(viewport={"width": 1400, "height": 1000})
            .new_page()
        )
        page.goto(f"http://{broker.http}/?cursor=default&prefix=jobs")
        page.wait_for_selector("#stream-state[data-state=live]", timeout=WAIT)
        assert page.text_content("#stream-state").startswith("watching default · jobs")

        with (
            Client.connect(broker.url, user="boss") as boss,
            Client.connect(broker.url, user="worker-1") as worker,
        ):
            boss.queue_config("jobs", max_deliveries=3)  # a queue from now on: listed at once
            for n in range(5):
                boss.set(f"jobs.j{n}", {"n": n})
            ready = '#queues tr[data-queue="default/jobs"] [data-field=ready]'
            wait_text(page, ready, "5")

            held = worker.claim("jobs", lease=120)
            assert held is not None
            wait_text(page, '#queues tr[data-queue="default/jobs"] [data-field=claimed]', "1")
            assert cell(page, "jobs", "ready") == "4"
            claim = f'#claims tr[data-key="{held.key}"]'
            page.wait_for_selector(claim, timeout=WAIT)
            assert page.text_content(f"{claim} td.holder") == "worker-1"
            lease = page.text_content(f"{claim} td.lease")
            assert lease.startswith(("1 min", "2 min"))  # 120 s, counting down
            page.wait_for_function(  # it counts down on its own, between two refreshes
                "([selector, was]) => document.querySelector(selector).textContent !== was",
                arg=[f"{claim} td.lease", lease],
                timeout=WAIT,
            )

            boss.set("mail.m1", "hello")
            dying = worker.claim("mail", max_deliveries=1)
            assert dying is not None
            worker.release(dying.key, dying.token)
            assert worker.claim("mail", max_deliveries=1) is None  # delivered once: buried
            page.wait_for_selector('#dead tr[data-key="dead.mail.m1"]', timeout=WAIT)
            wait_text(page, '#queues tr[data-queue="default/mail"] [data-field=dead]', "1")
            wait_text(page, "#total-dead", "1")

            agents = "#agents tbody tr"
            page.wait_for_selector('#agents tr[data-user="worker-1"]', timeout=WAIT)
            users = {row.get_attribute("data-user") for row in page.query_selector_all(agents)}
            assert users == {"boss", "worker-1"}

            # The stream: every change under jobs, the claim too, each once; nothing of mail.
            page.wait_for_selector(f'#events tr[data-key="{held.key}"] .badge.claim', timeout=WAIT)
            keys = [
                r.get_attribute("data-key") for r in page.query_selector_all("#events tbody tr")
            ]
            assert sorted(keys) == sorted([f"jobs.j{n}" for n in range(5)] + [held.key])

            # The depth chart: the broker's samples and the current figures, drawn.
            chart = '#queues tr[data-queue="default/jobs"] svg.spark'
            assert int(page.get_attribute(chart, "data-points")) >= 2
            assert page.get_attribute(f"{chart} polyline.total", "points")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # The broker restarts on the same port. While it is away a change is written to the
        # database itself; the page's EventSource reconnects with the last revision it had and
        # must get that change: a stream that began again from "now" would never show it.
        broker.terminate()
        page.wait_for_selector("#stream-state[data-state=reconnecting]", timeout=WAIT)
        offline = Database.open(data / "default.db")
        try:
            offline.write(offline.engine.set("jobs.offline", 1, writer="offline", now=time.time()))
        finally:
            offline.close()
        port = broker.http.rpartition(":")[2]
        extra = ["--http", f"127.0.0.1:{port}"]
        with running_broker(data, short_dir / "b.sock", extra=extra) as again:
            page.wait_for_selector('#events tr[data-key="jobs.offline"]', timeout=WAIT)
            with Client.connect(again.url, user="boss") as boss:
                boss.set("jobs.after", 2)
            page.wait_for_selector('#events tr[data-key="jobs.after"]', timeout=WAIT)
            rows = page.query_selector_all("#events tbody tr")
            seen = [(r.get_attribute("data-rev"), r.get_attribute("data-key")) for r in rows]
            assert len(seen) == len(set(seen)) == 8  # nothing missed, nothing twice
            page.wait_for_selector("#status[data-state=live]", timeout=WAIT)
            page.screenshot(path=str(tmp_path / "dashboard-after-restart.png"), full_page=True)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    print(f"browser test: {time.monotonic() - started:.1f} s; screenshots in {tmp_path}")


def test_off_loopback_the_page_takes_its_token_from_the_fragment(
    tmp_path: Path, short_dir: Path
) -> None:
    sync_playwright = _browser_or_skip()
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.2")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    # 127.0.0.2: a loopback address the broker does not count as one, so the rules off loopback
    # apply (TLS, tokens) and no packet leaves the machine.
    tls = ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    extra = ["--http", "127.0.0.2:0", *tls]
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock", extra=extra) as broker,
        chromium(tmp_path / "profile") as browser,
        sync_playwright() as pw,
    ):
        assert broker.http is not None
        with Client.connect(broker.url, user="admin", token=admin_token(broker)) as admin:
            viewer = admin.user_add("viewer")
            admin.grant("viewer", "read", cursor="default", prefix="jobs")
            admin.set("jobs.a", 1)
            admin.set("secret.b", 2)
        context = pw.chromium.connect_over_cdp(browser.endpoint).new_context(
            ignore_https_errors=True  # the test's own CA: the browser does not know it
        )
        page = context.new_page()
        base = f"https://{broker.http}/"
        page.goto(f"{base}?cursor=default&prefix=jobs#token={viewer}")
        page.wait_for_selector("#status[data-state=live]", timeout=WAIT)
        assert page.url == f"{base}?cursor=default&prefix=jobs"  # the token left the address
        assert "viewing as viewer" in page.text_content("#broker")
        page.wait_for_selector("#stream-state[data-state=live]", timeout=WAIT)
        with Client.connect(broker.url, user="admin", token=admin_token(broker)) as admin:
            admin.set("jobs.b", 2)
        page.wait_for_selector('#events tr[data-key="jobs.b"]', timeout=WAIT)
        # A prefix the user may not read: refused, and the page says why.
        page.fill("#stream-prefix", "secret")
        page.click("#stream-form button")
        page.wait_for_selector("#stream-state[data-state=refused]", timeout=WAIT)
        assert "viewer needs read on cursor default, prefix secret" in page.text_content(
            "#stream-state"
        )
        # Without the token (a new tab of another session), nothing but the refusal shows.
        stranger = (
            pw.chromium.connect_over_cdp(browser.endpoint)
            .new_context(ignore_https_errors=True)
            .new_page()
        )
        stranger.goto(base)
        stranger.wait_for_selector("#status[data-state=error]", timeout=WAIT)
        assert "wants a token" in stranger.text_content("#status")
        page.screenshot(path=str(tmp_path / "dashboard-off-loopback.png"), full_page=True)
