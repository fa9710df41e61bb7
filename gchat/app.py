"""The composition root: the one place that builds and wires every part.

Everything is passed by constructor argument from here; no module reaches
for a global. ``App.start`` brings a node up (database, migrations, keys,
services, listener) and ``App.stop`` takes it down gracefully: stop
accepting, close connections with 1001 so clients reconnect to another
node, commit what is in flight, release the database.
"""

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from datetime import UTC, datetime, timedelta

from websockets.asyncio.server import Server, serve

from gchat.auth import Authenticator
from gchat.broker import InProcessBroker, Signal, SignalKind
from gchat.committer import GroupCommitter
from gchat.config import Config
from gchat.connection import Services, handler
from gchat.directory import Directory
from gchat.embedded_postgres import EmbeddedPostgres
from gchat.enrolment import Enrolment
from gchat.handlers import RequestHandlers
from gchat.http import routes
from gchat.keys import KeyDirectory
from gchat.messaging import Messaging
from gchat.ratelimit import LocalRateLimiter
from gchat.server_keys import ServerKeys
from gchat.store import messages, migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage
from gchat.tokens import TokenIssuer
from protocol import limits
from protocol.version import SUBPROTOCOLS

log = logging.getLogger("gchat.app")


async def open_database(config: Config) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to GCHAT_DATABASE_URL, or start the embedded cluster; migrate."""
    embedded = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_dir / "postgres")
        dsn = await embedded.start()
        log.info("embedded postgresql started under %s", embedded.root)
    db = await Database.connect(dsn, max_size=config.db_pool_size)
    async with db.pool.acquire() as conn:
        applied = await migrations.migrate(conn)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    return db, embedded


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = config.node_id or f"{socket.gethostname()}-{id(self):x}"
        self.db: Database | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._server: Server | None = None
        self._committer: GroupCommitter | None = None
        self._background: list[asyncio.Task[None]] = []
        self.port: int | None = None

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db, self._embedded = await open_database(config)
        db = self.db
        keys = ServerKeys.load_or_create(config.key_directory)
        broker = InProcessBroker()
        limiter = LocalRateLimiter()

        async def wake_recipients(batch: list[NewMessage]) -> None:
            devices = {device for m in batch for device, _ in m.envelopes}
            await broker.publish(devices, Signal(SignalKind.WAKE))

        async def prekeys_low(device_id: object, left: int) -> None:
            await broker.publish([device_id], Signal(SignalKind.PREKEYS_LOW, left))  # type: ignore[list-item]

        self._committer = GroupCommitter(
            db,
            window_seconds=config.commit_window_ms / 1000,
            max_batch=config.commit_max_batch,
            retention=timedelta(seconds=config.retention_seconds),
            after_commit=wake_recipients,
        )
        self._committer.start()
        keys_directory = KeyDirectory(
            db, limiter, config.max_prekeys_per_device, config.prekey_low_threshold, prekeys_low
        )
        services = Services(
            db=db,
            broker=broker,
            auth=Authenticator(
                db,
                TokenIssuer(keys.token, config.server_id, config.token_ttl_seconds),
                limiter,
                config.server_id,
            ),
            enrolment=Enrolment(
                db, keys.directory, limiter, config.server_id, config.max_devices_per_official
            ),
            keys=keys_directory,
            requests=RequestHandlers(
                Directory(db, config.enrolment_code_ttl_seconds),
                keys_directory,
                Messaging(
                    db,
                    self._committer,
                    limiter,
                    config.max_ciphertext_bytes,
                    config.max_recipient_devices,
                ),
            ),
            server_id=config.server_id,
            node_id=self.node_id,
            max_unacked=config.max_unacked,
            auth_timeout=config.auth_timeout_seconds,
        )
        self._server = await serve(
            handler(services),
            config.host,
            config.port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            process_request=routes(db, self._metrics),
            compression=None,  # ciphertext does not compress; no CRIME-style side channel
            server_header=None,  # do not advertise versions
            max_size=limits.MAX_FRAME_BYTES,
            max_queue=32,
            write_limit=64 * 1024,
            ping_interval=20,
            ping_timeout=20,
            open_timeout=10,
            close_timeout=5,
            ssl=self._tls(),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._background.append(asyncio.create_task(self._expire_forever()))
        log.info("listening host=%s port=%s node=%s", config.host, self.port, self.node_id)

    def _tls(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _metrics(self) -> dict[str, float]:
        committer = self._committer
        return {
            "connections": float(len(self._server.connections)) if self._server else 0.0,
            "commit_batches_total": float(committer.batches if committer else 0),
            "messages_committed_total": float(committer.committed if committer else 0),
        }

    async def _expire_forever(self) -> None:
        assert self.db is not None
        while True:
            await asyncio.sleep(self.config.expiry_interval_seconds)
            cutoff = datetime.now(UTC) - timedelta(seconds=self.config.retention_seconds)
            try:
                envelopes, metadata = await messages.expire(self.db.pool, cutoff)
                if envelopes or metadata:
                    log.info("expired envelopes=%d messages=%d", envelopes, metadata)
            except Exception:
                log.exception("expiry failed; will retry")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)  # 1001 going away
            await self._server.wait_closed()
        if self._committer is not None:
            await self._committer.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.db is not None:
            await self.db.close()
        if self._embedded is not None:
            await self._embedded.stop()
        log.info("stopped node=%s", self.node_id)


async def run(config: Config) -> None:
    """Run a node until SIGTERM or SIGINT, then stop it gracefully."""
    app = App(config)
    await app.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    print(f"gchat node listening on {config.host}:{app.port}", flush=True)
    try:
        await stopping.wait()
    finally:
        await app.stop()


def main(config: Config) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(run(config))
    else:
        uvloop.run(run(config))
