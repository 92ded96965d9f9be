"""``prontodb serve --http`` as a process: a real broker, scraped with a plain HTTP client (urllib)
and parsed with prometheus_client's parser; off loopback, TLS and a user's token or nothing."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme
from brokers import running_broker, serve_command
from prometheus_client.parser import text_string_to_metric_families

from prontodb.clients import Client

TIMEOUT = 30.0


def fetch(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_broker_process_serves_metrics_that_move(tmp_path: Path, short_dir: Path) -> None:
    with running_broker(
        tmp_path / "data", short_dir / "b.sock", extra=["--http", "127.0.0.1:0"]
    ) as broker:
        assert broker.http is not None
        base = f"http://{broker.http}"
        assert fetch(base + "/healthz") == (200, "ok\n")
        assert fetch(base + "/readyz") == (200, "ready\n")
        with Client.connect(broker.url, user="agent") as client:
            client.set("jobs.a", 1)
            client.set("jobs.b", 2, delay=3600)
            before = values(fetch(base + "/metrics")[1])
            item = client.claim("jobs", max_deliveries=1)
            assert item is not None
            client.release(item.key, item.token)
            assert client.claim("jobs", max_deliveries=1) is None  # delivered once: buried
            status, text = fetch(base + "/metrics")
        assert status == 200
        after = values(text)
        ok = frozenset({("op", "set"), ("code", "ok")})
        assert before[("prontodb_requests_total", ok)] == 2
        assert after[("prontodb_requests_total", ok)] == 2
        cursor = frozenset({("cursor", "default")})
        assert after[("prontodb_claims_total", cursor)] == 1
        assert after[("prontodb_dead_letters_total", cursor)] == 1
        depth = "prontodb_queue_depth"
        for state, count in (("ready", 0), ("delayed", 1), ("claimed", 0), ("dead", 1)):
            labels = frozenset({("cursor", "default"), ("queue", "jobs"), ("state", state)})
            assert after[(depth, labels)] == count, state
        assert after[("prontodb_fsync_duration_seconds_count", frozenset())] >= 4
        assert fetch(base + "/nothing-here")[0] == 404


def test_off_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        serve_command("--data-dir", str(tmp_path / "d"), "--http", "0.0.0.0:0"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "off loopback the metrics listener needs TLS" in done.stderr


@pytest.fixture
def tls(tmp_path: Path) -> tuple[list[str], ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return ["--tls-cert", str(cert_file), "--tls-key", str(key_file)], context


def test_off_loopback_wants_tls_and_a_known_users_token(
    tmp_path: Path, short_dir: Path, tls: tuple[list[str], ssl.SSLContext]
) -> None:
    options, context = tls
    extra = ["--http", "0.0.0.0:0", *options]
    with running_broker(tmp_path / "data", short_dir / "b.sock", extra=extra) as broker:
        assert broker.http is not None
        url = f"https://127.0.0.1:{broker.http.rpartition(':')[2]}/metrics"
        with Client.connect(broker.url, user="admin") as admin:
            scraper = admin.user_add("scraper")  # a user with no grant at all
        status, body = fetch(url, context=context)
        assert status == 401
        assert "Authorization: Bearer" in body
        assert fetch(url, token="not-a-token", context=context)[0] == 401
        status, body = fetch(url, token=scraper, context=context)
        assert status == 200
        assert "prontodb_requests_total" in body
        # Plain HTTP to the TLS listener gets nothing, and the broker serves on.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url.replace("https", "http"), timeout=TIMEOUT)
        assert fetch(url.replace("/metrics", "/healthz"), token=scraper, context=context)[0] == 200
