"""What `prontodb mcp --http` adds to the stdio server (whose tools tests/test_mcp.py runs on
both transports): who may talk to it, TLS off loopback, and a closed session's subscriptions."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import httpx2
import trustme
from brokers import BrokerProcess
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from test_mcp import admin, broker, http_server, make_user, mcp_argv, ok, until

from prontodb.clients._mcp_http import listen

__all__ = ["broker"]  # the fixture, shared with tests/test_mcp.py

pytestmark = [
    pytest.mark.filterwarnings(f"ignore:Async generator '{package}\\.:ResourceWarning")
    for package in ("httpx2", "httpcore2")
]
pytestmark.append(pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed"))

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


async def test_every_request_needs_the_users_token(broker: BrokerProcess, tmp_path: Path) -> None:
    token = make_user(broker, "agent", "")
    async with http_server(broker, "agent", token, tmp_path) as url, httpx2.AsyncClient() as http:
        for given in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": token}):
            refused = await http.post(url, json=INITIALIZE, headers={**ACCEPT, **given})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "token of the ProntoDB user" in refused.json()["error"]
        bearer = {"Authorization": f"Bearer {token}"}
        answered = await http.post(url, json=INITIALIZE, headers={**ACCEPT, **bearer})
        assert answered.status_code == 200


def refusal(broker: BrokerProcess, address: str, env: dict[str, str], *extra: str) -> str:
    argv = [sys.executable, *mcp_argv(broker, "agent", "--http", address, *extra)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    return done.stderr


def test_off_loopback_it_needs_a_token_and_tls(broker: BrokerProcess) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PRONTODB_TOKEN"}
    assert "set PRONTODB_TOKEN" in refusal(broker, "0.0.0.0:0", env)
    env["PRONTODB_TOKEN"] = make_user(broker, "agent", "")
    assert "give --tls-cert and --tls-key" in refusal(broker, "0.0.0.0:0", env)
    assert "not HOST:PORT" in refusal(broker, "nowhere", env)
    assert listen("7411", None, None).host == "127.0.0.1"  # a port alone: loopback


async def test_tls_and_a_token_off_loopback(broker: BrokerProcess, tmp_path: Path) -> None:
    token = make_user(broker, "agent", "")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    tls = ("--tls-cert", str(cert_file), "--tls-key", str(key_file))
    async with (
        http_server(broker, "agent", token, tmp_path, *tls, address="0.0.0.0:0") as url,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=trusted) as http,
    ):
        assert url.startswith("https://0.0.0.0:")
        url = url.replace("0.0.0.0", "127.0.0.1")
        async with (
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await ok(session, "set", key="over", value="tls")
            assert (await ok(session, "get", key="over"))["value"] == "tls"


def watchers(broker: BrokerProcess) -> int:
    with admin(broker) as client:
        databases = client.status()["databases"]
    return sum(db["watchers"] for db in databases if db["name"] == "default")


async def test_a_closed_session_ends_its_subscriptions(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    token = make_user(broker, "monitor", "")
    with admin(broker) as client:
        client.set("plan", 0)  # status lists the databases that are open
    async with (
        http_server(broker, "monitor", token, tmp_path) as url,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        for _ in range(2):  # the server outlives its sessions
            async with (
                streamable_http_client(url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await session.subscribe_resource("prontodb://default/jobs/")
                await session.subscribe_resource("prontodb://default/plan")
                await until(lambda: watchers(broker) == 2, "two watches at the broker")
            # the client's exit ends its session (DELETE): the server ends its watches
            await until(lambda: watchers(broker) == 0, "the session's watches ended")
