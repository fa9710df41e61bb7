"""The composition root: the one place that builds and wires every part.

Everything is passed by constructor argument from here; no module reaches
for a global. ``App.start`` brings a node up (database, migrations, keys,
services, listener) and ``App.stop`` takes it down gracefully: stop
accepting, close connections with 1001 so clients reconnect to another
node, commit what is in flight, release the database.

The broker is chosen here: with ``redis_url`` empty the in-process broker
and local rate-limit buckets serve a single node; with it set, the Redis
broker (``gchat.runtime.redis_broker``) carries wake-ups, displacements and
revocations between nodes and the limits live in Redis, shared by all;
with ``broker = postgres`` (what ``gchat serve --workers N`` gives its
workers when there is no Redis) PostgreSQL LISTEN/NOTIFY carries them.
"""

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

from redis.asyncio import Redis
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import NegotiationError
from websockets.typing import Subprotocol

from gchat.attachments.capability import Capabilities, derive_key
from gchat.attachments.handlers import AttachmentHandlers
from gchat.attachments.service import Attachments
from gchat.attachments.service import Limits as AttachmentLimits
from gchat.attachments.storage import FilesystemStore, file_threads
from gchat.audit.failures import FailureAudit
from gchat.audit.handlers import AuditHandlers
from gchat.audit.log import AuditLog
from gchat.audit.sequencer import Sequencer
from gchat.audit.service import AuditService
from gchat.config import Config
from gchat.conversations.handlers import ConversationHandlers
from gchat.conversations.service import AgencyTreePolicy, Conversations
from gchat.directory import policy
from gchat.directory.administration import Administration
from gchat.directory.handlers import DirectoryHandlers
from gchat.directory.importer import DirectoryImport
from gchat.directory.policy import DirectoryPolicy
from gchat.directory.service import Directory
from gchat.handling import request_table
from gchat.identity.auth import Authenticator
from gchat.identity.enrolment import Enrolment
from gchat.identity.handlers import IdentityHandlers
from gchat.identity.prekeys import Prekeys
from gchat.identity.revocation import Revocations
from gchat.identity.tokens import TokenIssuer
from gchat.messaging import service as messaging
from gchat.messaging.committer import SendCommitter
from gchat.messaging.delivery import Inbox
from gchat.messaging.handlers import MessagingHandlers
from gchat.messaging.service import Messaging
from gchat.push.handlers import PushHandlers
from gchat.push.notifier import Coalescer, LocalCoalescer, PushNotifier, RedisCoalescer
from gchat.push.sender import WebPushSender
from gchat.push.service import PushRegistrations
from gchat.runtime import logs, node_id, samplers
from gchat.runtime.broker import Broker, InProcessBroker, Signal, SignalKind
from gchat.runtime.embedded_postgres import EmbeddedPostgres
from gchat.runtime.metrics import CONTENT_TYPE, NodeMetrics, bearer_access, serve_separately
from gchat.runtime.postgres_broker import PostgresBroker
from gchat.runtime.quietlog import QuietLog
from gchat.runtime.ratelimit import (
    Limits,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    parse_overrides,
)
from gchat.runtime.redis_broker import RedisBroker, connect_redis
from gchat.runtime.redis_pool import IdlePool
from gchat.runtime.server_keys import ServerKeys
from gchat.runtime.version import version
from gchat.store import messages, migrations
from gchat.store.database import Database
from gchat.store.messages import NewMessage
from gchat.transport.admission import ConnectionCap, parse_networks
from gchat.transport.client_address import parse_trusted
from gchat.transport.connection import SESSION_FRAMES, Services, Writes, handler
from gchat.transport.http import routes
from gchat.transport.receiving import ReadingConnection
from gchat.transport.webapp import DEFAULT_ROOT, WebApp
from protocol import limits
from protocol.version import SUBPROTOCOLS, negotiate

log = logging.getLogger("gchat.app")

#: The collector's thresholds on a serving node (CPython's default: 700, 10, 10).
#: See :func:`settle_heap`.
GC_THRESHOLDS = (10_000, 10, 10)


async def open_database(config: Config) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to GCHAT_DATABASE_URL, or start the embedded cluster; migrate."""
    embedded = None
    dsn = config.database_url
    if not dsn:
        embedded = EmbeddedPostgres(config.data_dir / "postgres")
        dsn = await embedded.start()
        log.info("embedded postgresql started under %s", embedded.root)
    db = await Database.connect(
        dsn, max_size=config.db_pool_size, commit_lanes=config.commit_lanes
    )
    async with db.pool.acquire() as conn:
        applied = await migrations.migrate(conn)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    return db, embedded


#: How every connection is run (the load tests' raw relay uses the same, so
#: that it differs from a node only in what it does with a frame).
WEBSOCKET_SETTINGS: dict[str, Any] = {
    "compression": None,  # ciphertext does not compress; no CRIME-style side channel
    "server_header": None,  # do not advertise versions
    "max_size": limits.MAX_FRAME_BYTES,
    "max_queue": 32,
    "write_limit": 64 * 1024,
    "ping_interval": 20,
    "ping_timeout": 20,
    "open_timeout": 10,
    "close_timeout": 5,
}


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol:
    """The client's first supported subprotocol; none is a 400 at the handshake."""
    chosen = negotiate(offered)
    if chosen is None:
        raise NegotiationError(f"expected one of {', '.join(SUBPROTOCOLS)}")
    return Subprotocol(chosen)


class App:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = node_id.load_or_create(config.data_dir, config.node_id)
        self.db: Database | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._server: Server | None = None
        self._committer: SendCommitter | None = None
        self._inbox: Inbox | None = None
        self._background: list[asyncio.Task[None]] = []
        self._redis: Redis | None = None
        self.port: int | None = None
        self.metrics = NodeMetrics(version(), self.node_id)
        #: Background loops' failures: one line per outage, not per attempt.
        self._quiet = QuietLog(log)
        self._metrics_server: Any = None
        self.broker: Broker = InProcessBroker()
        self.limiter: RateLimiter = LocalRateLimiter(table=parse_overrides(config.rate_limits))
        #: Closes revoked devices' connections on every node (for admin operations).
        self.revocations: Revocations | None = None
        #: The audit log every service records into (pass it to new services).
        self.audit = AuditLog(enabled=config.audit_enabled)
        self.audit_service: AuditService | None = None
        self.sequencer: Sequencer | None = None
        #: Refused auth/enrolment attempts, audited per address and window.
        self.failures: FailureAudit | None = None
        self.push: PushNotifier | None = None
        self.attachments: Attachments | None = None
        self._file_threads: ThreadPoolExecutor | None = None

    async def _start_broker(self, dsn: str) -> None:
        """The in-process broker alone, Redis shared by every node, or
        PostgreSQL LISTEN/NOTIFY between processes sharing the database."""
        config = self.config
        if not config.redis_url and config.broker == "postgres":
            assert self.db is not None
            self.broker = PostgresBroker(dsn, self.db.pool, self.node_id, self.metrics)
        if config.redis_url:
            self._redis = connect_redis(
                config.redis_url, max_connections=config.redis_max_connections
            )
            pool = self._redis.connection_pool
            if isinstance(pool, IdlePool):
                self._background.append(
                    asyncio.create_task(pool.reap_forever(config.redis_idle_seconds))
                )
                self.metrics.redis_connections.set_function(lambda: float(pool.size()[0]))
            self.broker = RedisBroker(self._redis, config.redis_prefix, self.node_id, self.metrics)
            self.limiter = RedisRateLimiter(
                self._redis,
                config.redis_prefix,
                LocalRateLimiter(table=parse_overrides(config.rate_limits)),
                self.metrics,
                table=parse_overrides(config.rate_limits),
            )
        await self.broker.start()
        broker = self.broker
        self.metrics.broker_healthy.set_function(lambda: 1.0 if broker.healthy else 0.0)

    def _push_notifier(self, db: Database, keys: ServerKeys) -> PushNotifier:
        """Web Push to devices connected nowhere: one per device and window."""
        config = self.config
        coalescer: Coalescer = (
            RedisCoalescer(self._redis, config.redis_prefix, config.push_coalesce_seconds)
            if self._redis is not None
            else LocalCoalescer(config.push_coalesce_seconds)
        )
        sender = WebPushSender(keys.vapid, config.push_subject, ca_file=config.push_ca_file)
        return PushNotifier(db, sender, coalescer, self.broker)

    async def start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.db, self._embedded = await open_database(config)
        db = self.db
        keys = ServerKeys.load_or_create(config.key_directory)
        embedded = self._embedded
        await self._start_broker(config.database_url or (embedded.dsn() if embedded else ""))
        broker = self.broker
        limiter = self.limiter
        self.revocations = Revocations(db, broker)
        self.push = self._push_notifier(db, keys)
        push = self.push

        self._inbox = Inbox(db, self.audit, self.metrics, config.ack_linger_seconds)
        inbox = self._inbox

        writes = Writes()
        # A node alone (the in-process broker) has no other node to tell.
        alone = isinstance(broker, InProcessBroker)

        def wake_recipients(batch: list[NewMessage]) -> Awaitable[None] | None:
            # Streams here take the committed rows as they are, and their
            # envelopes leave now, not a loop pass later (the committer calls
            # this as the batch commits); the signals follow, if any: a node
            # alone whose streams took every row has none to send, and the
            # committer then runs no task for them (one per send at low load).
            handed, elsewhere = inbox.hand_over(batch)
            writes.flush()
            if alone and not elsewhere:
                return None
            return signal_recipients(handed, elsewhere)

        async def signal_recipients(handed: set[UUID], elsewhere: set[UUID]) -> None:
            # Other nodes (a device mid-way through moving to one) still get the
            # wake-up. Every device with a new row (group members too) is in one set.
            await broker.publish(elsewhere, Signal(SignalKind.WAKE))
            if handed:
                await broker.publish(handed, Signal(SignalKind.WAKE), local=False)
            # Devices handed their rows are connected here: no push. Returns at
            # once: pushes run in the background.
            push.notify(elsewhere)

        async def prekeys_low(device_id: object, left: int) -> None:
            await broker.publish([device_id], Signal(SignalKind.PREKEYS_LOW, left))  # type: ignore[list-item]

        self._committer = SendCommitter(
            db,
            max_batch=config.commit_max_batch,
            retention=timedelta(seconds=config.retention_seconds),
            after_commit=wake_recipients,
            metrics=self.metrics,
            audit=self.audit,
            prepare=messaging.check_batch,
            lanes=config.commit_lanes,
        )
        self._committer.start()
        self.sequencer = Sequencer(
            db,
            keys.audit,
            config.audit_sign_interval_seconds,
            poll_interval=config.audit_poll_seconds,
            pass_events=config.audit_pass_events,
            node_id=self.node_id,
        )
        self.sequencer.start()
        self.audit_service = AuditService(
            db, self.audit, keys.audit.public_key, config.audit_transparency_delay_seconds
        )
        prekeys = Prekeys(
            db,
            limiter,
            config.max_prekeys_per_device,
            config.prekey_low_threshold,
            prekeys_low,
            audit=self.audit,
        )
        directory = Directory(db, config.enrolment_code_ttl_seconds, self.audit, limiter)
        # Conversations and groups (membership events signed with the directory key).
        conversations = Conversations(
            db,
            keys.directory,
            broker,
            self.audit,
            DirectoryPolicy(db, also=AgencyTreePolicy(db, config.allow_cross_agency_groups)),
            self._committer,
            limiter,
            max_members=config.max_group_members,
            max_ciphertext=config.max_ciphertext_bytes,
            retention=timedelta(seconds=config.retention_seconds),
        )
        # Directory administration (admin operations, import, search).
        administration = Administration(
            db,
            self.audit,
            self.revocations,
            config.enrolment_code_ttl_seconds,
            config.max_devices_per_official,
            config.retention_seconds,
        )
        self._inbox.start()
        self.failures = FailureAudit(db, self.audit, config.failure_audit_seconds)
        self.failures.start()
        limit_table = parse_overrides(config.rate_limits)
        # Attachments: ciphertext blobs in the attachment folder (shared by the nodes).
        self._file_threads = file_threads()
        self.attachments = Attachments(
            db,
            FilesystemStore(config.attachment_directory, self._file_threads),
            Capabilities(derive_key(keys.token.seed), config.attachment_capability_seconds),
            self.audit,
            AttachmentLimits(
                max_file=config.max_attachment_bytes,
                per_day=config.attachment_bytes_per_day,
                retention_seconds=config.retention_seconds,
                upload_ttl_seconds=config.attachment_upload_ttl_seconds,
                max_devices_per_official=config.max_devices_per_official,
            ),
        )
        cap = ConnectionCap(
            config.max_connections_per_address, parse_networks(config.connection_cap_exempt)
        )
        services = Services(
            db=db,
            inbox=self._inbox,
            broker=broker,
            auth=Authenticator(
                db,
                TokenIssuer(keys.token, config.server_id, config.token_ttl_seconds),
                limiter,
                config.server_id,
                audit=self.audit,
                failures=self.failures,
            ),
            enrolment=Enrolment(
                db,
                keys.directory,
                limiter,
                config.server_id,
                config.max_devices_per_official,
                audit=self.audit,
                failures=self.failures,
            ),
            keys=prekeys,
            cap=cap,
            frame_limit=limit_table.get(Limits.FRAMES, Limits.FRAMES.value),
            requests=request_table(
                [
                    IdentityHandlers(prekeys),
                    MessagingHandlers(
                        Messaging(
                            self._committer,
                            limiter,
                            config.max_ciphertext_bytes,
                            config.max_recipient_devices,
                        )
                    ),
                    ConversationHandlers(conversations),
                    DirectoryHandlers(
                        administration,
                        DirectoryImport(db, self.audit, administration),
                        directory,
                    ),
                    AuditHandlers(self.audit_service),
                    PushHandlers(PushRegistrations(db, keys.vapid)),
                    AttachmentHandlers(self.attachments),
                ],
                SESSION_FRAMES,
            ),
            server_id=config.server_id,
            node_id=self.node_id,
            max_unacked=config.max_unacked,
            auth_timeout=config.auth_timeout_seconds,
            trusted_proxies=parse_trusted(config.trusted_proxies),
            metrics=self.metrics,
            writes=writes,
        )
        self._server = await serve(
            handler(services),
            config.host,
            config.port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=_select_subprotocol,
            process_request=routes(
                db,
                None if config.metrics_port else self.metrics.render,
                self._web_app(),
                content_type=CONTENT_TYPE,
                allowed=bearer_access(config.metrics_token_sha256),
                cap=cap,
                trusted_proxies=parse_trusted(config.trusted_proxies),
            ),
            ssl=self._tls(),
            backlog=1024,  # a reconnect storm overflows asyncio's default of 100
            reuse_port=config.reuse_port or None,  # --workers: one port, several processes
            create_connection=ReadingConnection,  # received messages in a leaner queue
            **WEBSOCKET_SETTINGS,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._background.append(asyncio.create_task(self._expire_forever()))
        self._background.append(asyncio.create_task(samplers.event_loop_lag(self.metrics)))
        self._background.append(asyncio.create_task(samplers.database_gauges(db, self.metrics)))
        sequencer = self.sequencer
        self.metrics.audit_sequencer_leading.set_function(lambda: float(sequencer.leading))
        self.metrics.audit_sequenced.set_function(lambda: float(sequencer.sequenced))
        self._background.append(
            asyncio.create_task(samplers.audit_backlog(db, self.metrics, lambda: sequencer.leading))
        )
        if config.metrics_port:
            self._metrics_server = serve_separately(
                self.metrics, config.metrics_host, config.metrics_port
            )
        self._background.append(asyncio.create_task(self._sweep_revocations()))
        self._background.append(asyncio.create_task(self._collect_attachments()))
        log.info("listening host=%s port=%s node=%s", config.host, self.port, self.node_id)
        if config.tls_cert:
            log.info("tls on: TLS 1.3 only, certificate %s", config.tls_cert)
        elif not _is_loopback(config.host):
            log.warning(
                "tls off on non-loopback address %s: clients talk plain WebSocket (ws://), "
                "readable on the network; set tls_cert and tls_key, or terminate TLS in a "
                "reverse proxy and listen on 127.0.0.1",
                config.host,
            )
        else:
            log.info("tls off: plain WebSocket on a loopback address")

    @property
    def url(self) -> str:
        """The address clients connect to (as bound: the real port when 0 was asked)."""
        scheme = "wss" if self.config.tls_cert else "ws"
        host = self.config.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    def banner(self) -> str:
        """What an operator needs at start: where it listens, its files, how to stop it."""
        config = self.config
        tls = f"TLS 1.3, {config.tls_cert}" if config.tls_cert else "TLS off"
        if config.metrics_port:
            metrics = f"http://{config.metrics_host}:{config.metrics_port}/metrics"
        else:
            metrics = f"{self.url.replace('ws', 'http', 1)}/metrics"
            if config.metrics_token_sha256:
                metrics += " (bearer token)"
        database = (
            f"embedded PostgreSQL under {(config.data_dir / 'postgres').resolve()}"
            if self._embedded is not None
            else f"PostgreSQL {_where(config.database_url)}"
        )
        return "\n".join(
            [
                f"G-Chat {version()} node {self.node_id}",
                f"  listening  {self.url} ({tls})",
                f"  metrics    {metrics}",
                f"  data       {config.data_dir.resolve()}",
                f"  keys       {config.key_directory.resolve()}",
                f"  database   {database}",
                f"  logs       stderr ({config.log_format})",
                f"  stop       Ctrl-C, or kill -TERM {os.getpid()}",
            ]
        )

    def _web_app(self) -> WebApp:
        origins = [o for o in self.config.web_origins.split(",") if o.strip()]
        return WebApp.from_directory(self.config.web_dir or DEFAULT_ROOT, origins)

    def _tls(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    async def _sweep_revocations(self) -> None:
        """Close connections of devices revoked while their signal was lost."""
        assert self.revocations is not None
        while True:
            await asyncio.sleep(self.config.revocation_sweep_seconds)
            try:
                await self.revocations.sweep()
            except Exception as error:  # will retry
                self._quiet.failure("revocation sweep", error)
            else:
                self._quiet.recovered("revocation sweep")

    async def _collect_attachments(self) -> None:
        """Expired attachments, uploads left unfinished, files no row names."""
        assert self.attachments is not None
        while True:
            await asyncio.sleep(self.config.expiry_interval_seconds)
            try:
                count = await self.attachments.collect()
                if count:
                    log.info("collected attachments=%d", count)
            except Exception as error:  # will retry
                self._quiet.failure("attachment collection", error)
            else:
                self._quiet.recovered("attachment collection")

    async def _expire_forever(self) -> None:
        assert self.db is not None
        while True:
            await asyncio.sleep(self.config.expiry_interval_seconds)
            cutoff = datetime.now(UTC) - timedelta(seconds=self.config.retention_seconds)
            try:
                envelopes, metadata = await messages.expire(self.db.pool, cutoff)
                if envelopes or metadata:
                    log.info("expired envelopes=%d messages=%d", envelopes, metadata)
                # Agencies whose policy keeps undelivered envelopes for less.
                by_policy = await policy.expire_undelivered(
                    self.db.pool, self.config.retention_seconds
                )
                if by_policy:
                    log.info("expired by directory policy envelopes=%d", by_policy)
            except Exception as error:  # will retry
                self._quiet.failure("expiry", error)
            else:
                self._quiet.recovered("expiry")

    async def stop(self) -> None:
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
        if self._server is not None:
            self._server.close(close_connections=True)  # 1001 going away
            await self._server.wait_closed()
        if self._file_threads is not None:  # chunks being written finish first
            await asyncio.to_thread(self._file_threads.shutdown)
        if self._committer is not None:
            await self._committer.stop()
        if self._inbox is not None:
            await self._inbox.stop()
        if self.push is not None:
            await self.push.close()
        if self.failures is not None:
            await self.failures.stop()
        if self.sequencer is not None:
            await self.sequencer.stop()
        await self.broker.close()  # after the committer: its last wake-ups go out
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.db is not None:
            await self.db.close()
        if self._embedded is not None:
            await self._embedded.stop()
        log.info("stopped node=%s", self.node_id)


async def run(config: Config, ready: Callable[[], None] | None = None) -> None:
    """Run a node until SIGTERM or SIGINT, then stop it gracefully.

    ``ready`` is called once the node serves (``--workers`` tells its parent).
    """
    app = App(config)
    try:
        await app.start()
    except BaseException:
        # A failed start (say, the port is taken) must not leave the embedded
        # PostgreSQL or the pools it already opened behind.
        await app.stop()
        raise
    settle_heap()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping.set)
    if config.log_format == "json":  # one record, so every output line stays JSON
        log.info("%s", app.banner())
    else:
        print(app.banner(), flush=True)
    if ready is not None:
        ready()
    try:
        await stopping.wait()
    finally:
        await app.stop()


def settle_heap() -> None:
    """Keep the garbage collector's pauses off the message path of a started node.

    A full collection walks every object the collector tracks, and a
    started node holds about 100,000 that live as long as the process
    (modules, classes, functions, the handler table). Each full pass
    stalled every connection of the node for 50-135 ms on the 2-core bench
    machine, about twice in 8 s at 1,500 msg/s: that alone set the relay's
    p99. So they are collected once here and frozen (``gc.freeze``): no
    later pass walks them.

    The young generation's threshold counts allocations minus deallocations
    of tracked objects. At CPython's 700 a collection ran whenever a few
    hundred messages' objects were in flight, and each one promoted the
    survivors (objects that live for one message, tens of milliseconds)
    towards the old generation, whose passes they then lengthened. At
    ``GC_THRESHOLDS`` a steady load hardly collects at all (its objects die
    by reference count), and garbage cycles are still collected after that
    many objects accumulate.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _where(dsn: str) -> str:
    """``database on host:port`` from a DSN, without the user or password."""
    parts = urlsplit(dsn)
    host = parts.hostname or parse_qs(parts.query).get("host", ["local socket"])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"database {parts.path.lstrip('/') or '(default)'} on {host}{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: assume it is reachable from elsewhere
        return False


def main(config: Config, ready: Callable[[], None] | None = None) -> None:
    config = replace(config, node_id=node_id.load_or_create(config.data_dir, config.node_id))
    logs.configure(config.log_format, config.node_id)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        asyncio.run(run(config, ready))
    else:
        uvloop.run(run(config, ready))
