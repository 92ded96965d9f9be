"""The broker's HTTP listener (``serve --http``): its routes and who may use them.

``/metrics`` (Prometheus), ``/healthz`` (the process answers), ``/readyz`` (the broker serves
requests), and the dashboard: its page and assets (``/``, package data in ``dashboard/``), and the
JSON and events it reads (``/api/fleet``, ``/api/stream``). Off loopback the listener is TLS only
and every route but the page's static files wants a known user's token: ``Authorization: Bearer
<token>``, or, on ``/api/stream`` alone, ``?access_token=<token>`` (an EventSource cannot set a
header); docs/METRICS.md and docs/DASHBOARD.md say why and what that risks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

import trio

from ._access import Known, token_owner
from ._dashboard import DepthHistory, Viewer, fleet
from ._dashboard_stream import DashboardStreams
from ._databases import Databases
from ._http import Handler, HttpRequest, HttpResponse, HttpServer, text
from ._metrics import CONTENT_TYPE, exposition
from ._stats import Stats

# The page's files (package data), by path: (file name, content type).
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
# The page runs only its own files and talks only to this listener; no other site may frame it.
ASSET_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
]
ViewerHandler = Callable[[HttpRequest, Viewer | None], Awaitable[HttpResponse]]


@dataclass(slots=True)
class Web:
    """The HTTP server and the dashboard's depth sampler, which runs while it serves."""

    server: HttpServer
    history: DepthHistory
    snapshot: Callable[[], dict[str, Any]]

    async def serve(self, listeners: Sequence[trio.abc.Listener[Any]]) -> None:
        """Serve until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.history.run, self.snapshot)
            await self.server.serve(listeners)


def web_server(
    *,
    server_name: str,
    snapshot: Callable[[], dict[str, Any]],
    not_ready: Callable[[], str | None],
    users: Callable[[], Mapping[str, Known]] | None,
    databases: Databases,
    stats: Stats,
) -> Web:
    """The broker's HTTP server: ``not_ready()`` says why it does not serve (None: it does);
    ``users`` (the catalog's), when given, is who may ask, by token (off loopback)."""
    render = exposition(snapshot)
    history = DepthHistory()
    streams = DashboardStreams(databases, stats)

    async def metrics(request: HttpRequest, viewer: Viewer | None) -> HttpResponse:
        return HttpResponse(200, render(), content_type=CONTENT_TYPE)

    async def healthz(request: HttpRequest, viewer: Viewer | None) -> HttpResponse:
        return text(200, "ok")

    async def readyz(request: HttpRequest, viewer: Viewer | None) -> HttpResponse:
        why = not_ready()
        return text(200, "ready") if why is None else text(503, f"not ready: {why}")

    async def api_fleet(request: HttpRequest, viewer: Viewer | None) -> HttpResponse:
        grants = databases.catalog.grants
        answer = fleet(snapshot(), databases.opened(), history, viewer, grants, streams.figures())
        return HttpResponse(200, answer, content_type="application/json", headers=_NO_STORE)

    async def api_stream(request: HttpRequest, viewer: Viewer | None) -> HttpResponse:
        return await streams.respond(request, viewer, users)

    guard = _Guard(users)
    routes: dict[str, Handler] = {
        "/metrics": guard(metrics),
        "/healthz": guard(healthz),
        "/readyz": guard(readyz),
        "/api/fleet": guard(api_fleet),
        "/api/stream": guard(api_stream, query_token=True),
        **{path: _asset(name, kind) for path, (name, kind) in ASSETS.items()},
    }
    server = HttpServer(routes, server_name=server_name)
    return Web(server, history, snapshot)


_NO_STORE = [("cache-control", "no-store")]


class _Guard:
    """Wraps a route so that, off loopback (``users`` given), it serves only a known user's
    token, and hands the route that user (None on loopback: grants do not apply there)."""

    def __init__(self, users: Callable[[], Mapping[str, Known]] | None) -> None:
        self.users = users

    def __call__(self, handler: ViewerHandler, *, query_token: bool = False) -> Handler:
        users = self.users

        async def guarded(request: HttpRequest) -> HttpResponse:
            if users is None:
                return await handler(request, None)
            token = request.bearer()
            if token is None and query_token:
                token = _one(request, "access_token")
            owner = token_owner(users(), token)
            if owner is None or token is None:
                return _unauthorized(token is None, query_token)
            return await handler(request, Viewer(owner, token))

        return guarded


def _unauthorized(missing: bool, query_token: bool) -> HttpResponse:
    why = "needs" if missing else "has an unknown token in"
    also = " (or ?access_token=)" if query_token else ""
    return text(
        401,
        f"This listener {why} an Authorization: Bearer header{also} with a ProntoDB user's "
        "token (an admin makes one with `prontodb user add`).",
        www_authenticate='Bearer realm="prontodb"',
    )


def _asset(name: str, content_type: str) -> Handler:
    """A file of the page, read once from the package, served to anyone (it holds no data)."""
    body = files(__name__.rpartition(".")[0]).joinpath("dashboard", name).read_bytes()

    async def serve(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, body, content_type=content_type, headers=list(ASSET_HEADERS))

    return serve


def _one(request: HttpRequest, name: str) -> str | None:
    values = parse_qs(request.query).get(name)
    return values[-1] if values else None
