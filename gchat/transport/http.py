"""Plain HTTP on the WebSocket port: /healthz, /readyz, /metrics.

websockets hands us every request before the upgrade; these paths are
answered here and never reach the protocol. /healthz says the process is
serving; /readyz that the database answers and the schema is current (what
a load balancer should route on); /metrics is Prometheus text
(``gchat.runtime.metrics``), unless the node serves it on a separate
listen address only (``metrics=None``: not here), and behind a bearer
token when one is configured (``gchat.runtime.metrics.bearer_access``).

These three answer GET and HEAD only (405 with ``Allow`` otherwise), with
one ``Content-Type``. An upgrade request from an address that already holds
its share of connections (``gchat.transport.admission.ConnectionCap``) is
answered 429 here, before any WebSocket work.
"""

import email.utils
import http
import logging
from collections.abc import Awaitable, Callable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gchat.runtime.quietlog import QuietLog
from gchat.store import migrations
from gchat.store.database import Database
from gchat.transport.admission import ConnectionCap
from gchat.transport.client_address import Network, client_address
from gchat.transport.webapp import WebApp

log = logging.getLogger("gchat.transport.http")

#: Renders the node's metrics as Prometheus text (``NodeMetrics.render``).
MetricsSource = Callable[[], bytes]
#: Whether a request's ``Authorization`` header may read /metrics.
MetricsAccess = Callable[[str | None], bool]


_PLAIN = frozenset({"/healthz", "/readyz", "/metrics"})


def _is_upgrade(request: Request) -> bool:
    return "websocket" in request.headers.get("Upgrade", "").lower()


def _text(connection: ServerConnection, status: http.HTTPStatus, body: str) -> Response:
    response = connection.respond(status, body)  # text/plain; charset=utf-8
    response.headers["Cache-Control"] = "no-store"
    return response


def routes(
    db: Database,
    metrics: MetricsSource | None,
    web: WebApp | None = None,
    content_type: str = "text/plain; version=0.0.4; charset=utf-8",
    allowed: MetricsAccess = lambda _: True,
    cap: ConnectionCap | None = None,
    trusted_proxies: Sequence[Network] = (),
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    quiet = QuietLog(log)

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        response = await answer(connection, request)
        if response is not None and request.method == "HEAD":
            response.body = b""  # the headers (Content-Length too) as for GET
        return response

    async def answer(connection: ServerConnection, request: Request) -> Response | None:
        if cap is not None and _is_upgrade(request):
            remote = client_address(  # as the connection will count itself
                str(connection.remote_address[0]) if connection.remote_address else "?",
                request.headers.get_all("X-Forwarded-For"),
                trusted_proxies,
            )
            if cap.full(remote):
                response = _text(
                    connection,
                    http.HTTPStatus.TOO_MANY_REQUESTS,
                    "too many connections from this address\n",
                )
                response.headers["Retry-After"] = "10"
                return response
        if web is not None and (answer := web.answer(request.path, request.headers.get_all)):
            # The app's files, or a refused cross-site upgrade (gchat.transport.webapp).
            headers = Headers(answer.headers)
            headers["Content-Length"] = str(len(answer.body))
            return Response(answer.status.value, answer.status.phrase, headers, answer.body)
        path = request.path.split("?", 1)[0]
        if path in _PLAIN and request.method not in ("GET", "HEAD"):
            response = _text(connection, http.HTTPStatus.METHOD_NOT_ALLOWED, "GET or HEAD\n")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "/healthz":
            return _text(connection, http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            try:
                async with db.pool.acquire() as conn:
                    pending = await migrations.pending(conn)
            except Exception as error:  # a load balancer polls: one line per outage
                quiet.failure("readiness check", error)
                return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "database down\n")
            quiet.recovered("readiness check")
            if pending:
                body = f"{pending} migrations pending\n"
                return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, body)
            return _text(connection, http.HTTPStatus.OK, "ready\n")
        if path == "/metrics" and metrics is not None:
            if not allowed(request.headers.get("Authorization")):
                response = _text(connection, http.HTTPStatus.UNAUTHORIZED, "bearer token needed\n")
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
            exposition = metrics()
            headers = Headers(
                [
                    ("Date", email.utils.formatdate(usegmt=True)),
                    ("Connection", "close"),
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(exposition))),
                    ("Cache-Control", "no-store"),
                ]
            )
            return Response(http.HTTPStatus.OK, "OK", headers, exposition)
        return None

    return process_request
