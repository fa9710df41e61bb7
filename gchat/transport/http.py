"""Plain HTTP on the WebSocket port: /healthz, /readyz, /metrics.

websockets hands us every request before the upgrade; these paths are
answered here and never reach the protocol. /healthz says the process is
serving; /readyz that the database answers and the schema is current (what
a load balancer should route on); /metrics is Prometheus text.
"""

import http
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gchat.store import migrations
from gchat.store.database import Database
from gchat.transport.webapp import WebApp

log = logging.getLogger("gchat.transport.http")

#: Renders the node's metrics as Prometheus text (``NodeMetrics.render``).
MetricsSource = Callable[[], str]


def _text(connection: ServerConnection, status: http.HTTPStatus, body: str) -> Response:
    response = connection.respond(status, body)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


def routes(
    db: Database, metrics: MetricsSource, web: WebApp | None = None
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if web is not None and (answer := web.answer(request.path, request.headers.get_all)):
            # The app's files, or a refused cross-site upgrade (gchat.transport.webapp).
            headers = Headers(answer.headers)
            headers["Content-Length"] = str(len(answer.body))
            return Response(answer.status.value, answer.status.phrase, headers, answer.body)
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _text(connection, http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            try:
                async with db.pool.acquire() as conn:
                    pending = await migrations.pending(conn)
            except Exception as error:
                log.warning("not ready: %s", type(error).__name__)
                return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "database down\n")
            if pending:
                body = f"{pending} migrations pending\n"
                return _text(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, body)
            return _text(connection, http.HTTPStatus.OK, "ready\n")
        if path == "/metrics":
            response = _text(connection, http.HTTPStatus.OK, metrics())
            del response.headers["Content-Type"]  # Headers.__setitem__ appends
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        return None

    return process_request
