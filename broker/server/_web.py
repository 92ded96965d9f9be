"""The broker's HTTP listener (``serve --http``): its routes and who may use them.

``/metrics`` (Prometheus), ``/healthz`` (the process answers) and ``/readyz`` (the broker serves
requests). A later page adds its routes to :attr:`HttpServer.routes` the same way. Off loopback
every request must carry ``Authorization: Bearer <token>`` of a user the broker knows (any user:
the figures are the fleet's, and a scraper needs no grant), and the listener is TLS only
(docs/METRICS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._access import Known, token_owner
from ._http import Guard, HttpRequest, HttpResponse, HttpServer, text
from ._metrics import CONTENT_TYPE, exposition


def web_server(
    *,
    server_name: str,
    snapshot: Callable[[], dict[str, Any]],
    not_ready: Callable[[], str | None],
    users: Callable[[], Mapping[str, Known]] | None,
) -> HttpServer:
    """The broker's HTTP server: ``not_ready()`` says why it does not serve (None: it does);
    ``users`` (the catalog's), when given, is who may ask, by token."""
    render = exposition(snapshot)

    async def metrics(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, render(), content_type=CONTENT_TYPE)

    async def healthz(request: HttpRequest) -> HttpResponse:
        return text(200, "ok")

    async def readyz(request: HttpRequest) -> HttpResponse:
        why = not_ready()
        return text(200, "ready") if why is None else text(503, f"not ready: {why}")

    routes = {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}
    guard = None if users is None else token_guard(users)
    return HttpServer(routes, server_name=server_name, guard=guard)


def token_guard(users: Callable[[], Mapping[str, Known]]) -> Guard:
    """Let through requests whose bearer token is a known user's; 401 the others."""

    def guard(request: HttpRequest) -> HttpResponse | None:
        token = request.bearer()
        if token is not None and token_owner(users(), token) is not None:
            return None
        why = "needs" if token is None else "has an unknown token in"
        return text(
            401,
            f"This listener {why} an Authorization: Bearer header with a ProntoDB user's token "
            "(an admin makes one with `prontodb user add`).",
            www_authenticate='Bearer realm="prontodb"',
        )

    return guard
