"""The metrics one node exposes on /metrics, through ``prometheus_client``.

Each node owns a private ``CollectorRegistry`` (never the library's global
``REGISTRY``): ``gchat.app`` builds one ``NodeMetrics`` per node and passes
it by constructor to whatever counts something, so two nodes in one process
(the tests run several) never share a counter.

Besides the application's own counters the registry carries the library's
process collector (CPU seconds, resident memory, open file descriptors,
start time), its platform collector (Python version) and a build-info
metric; the runtime samplers (``gchat.runtime.samplers``) keep the
event-loop lag, inbox depth and audit-sequencer lag gauges fresh.
"""

import bisect
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator, Sequence
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: The Content-Type of ``NodeMetrics.render``'s output.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HotCounter:
    """A counter bumped per frame or per message: one float addition.

    prometheus_client's ``Counter.inc`` takes a lock and checks itself on
    every call (about 1 us); a message bumps about ten counters, which was
    2% of its CPU at low load and 5% at capacity. Only the event loop's
    thread bumps these, and a scrape (perhaps on the metrics server's
    thread) reads one float: the GIL keeps it whole. Exposed exactly as a
    ``Counter`` of the same name would be (``_total`` and ``_created``).
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name.removesuffix("_total")
        self._documentation = documentation
        self._created = time.time()
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation)
        family.add_metric([], self.value, created=self._created)
        yield family


class HotHistogram:
    """A histogram observed per commit batch: a bisect and three additions.

    ``Histogram.observe`` walks its buckets in Python under a lock (1.5-2
    us); at low load every send is its own batch and observes two. Only the
    event loop's thread observes; a scrape copies the counts. Exposed as a
    ``Histogram`` of the same name would be.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._created = time.time()
        registry.register(self)

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound counts in that bound's bucket (le).
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # how Histogram writes it
            buckets.append((le, float(cumulative)))
        family = HistogramMetricFamily(self._name, self._documentation, buckets, total)
        family.samples.append(Sample(self._name + "_created", {}, self._created))
        yield family


class NodeMetrics:
    """The node's metrics (names prefixed ``gchat_``) in its own registry."""

    def __init__(self, version: str = "", node_id: str = "") -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info("gchat_build", "the running G-Chat version", registry=r).info(
            {"version": version or "unknown", "node": node_id}
        )
        self.connections = Gauge("gchat_connections", "open WebSocket connections", registry=r)
        self.authenticated = Gauge(
            "gchat_authenticated_connections",
            "connections with an authenticated device",
            registry=r,
        )
        self.frames_in = HotCounter(
            "gchat_frames_in_total", "frames received from clients", registry=r
        )
        self.frames_out = HotCounter("gchat_frames_out_total", "frames sent to clients", registry=r)
        self.sends_accepted = HotCounter(
            "gchat_sends_accepted_total", "send requests answered accepted", registry=r
        )
        self.sends_refused = Counter(
            "gchat_sends_refused_total",
            "send requests answered with an error",
            ["code"],
            registry=r,
        )
        self.errors = Counter(
            "gchat_errors_total", "error frames sent, by code", ["code"], registry=r
        )
        self.commit_batches = HotCounter("gchat_commit_batches_total", "group commits", registry=r)
        self.commit_failures = Counter(
            "gchat_commit_failures_total", "failed group commits", registry=r
        )
        self.messages_committed = HotCounter(
            "gchat_messages_committed_total",
            "sends committed (including idempotent repeats)",
            registry=r,
        )
        self.commit_batch_size = HotHistogram(
            "gchat_commit_batch_size", "sends per group commit", buckets=_BATCH_BUCKETS, registry=r
        )
        self.commit_latency = HotHistogram(
            "gchat_commit_latency_seconds",
            "time to write one group commit",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.deliveries = HotCounter(
            "gchat_deliveries_total", "envelopes pushed to devices", registry=r
        )
        self.handed_over = HotCounter(
            "gchat_deliveries_handed_over_total",
            "envelopes pushed as committed on this node, without reading the inbox",
            registry=r,
        )
        self.inbox_reads = HotCounter(
            "gchat_inbox_reads_total", "device inboxes read from the database", registry=r
        )
        self.inbox_envelopes = Gauge(
            "gchat_inbox_envelopes_estimate",
            "envelopes waiting in all inboxes: PostgreSQL's live-row estimate (n_live_tup), "
            "sampled every 15 s; it lags the truth by seconds, more after bulk changes",
            registry=r,
        )
        self.acks = HotCounter(
            "gchat_acks_total", "envelope positions acknowledged by devices", registry=r
        )
        self.broker_published = Counter(
            "gchat_broker_published_total", "signals published to other nodes", registry=r
        )
        self.broker_received = Counter(
            "gchat_broker_received_total", "signals received from other nodes", registry=r
        )
        self.broker_publish_failures = Counter(
            "gchat_broker_publish_failures_total",
            "signals that could not be published",
            registry=r,
        )
        self.broker_healthy = Gauge(
            "gchat_broker_healthy",
            "1 when signals flow between nodes (Redis up or single node)",
            registry=r,
        )
        self.redis_up = Gauge(
            "gchat_redis_up",
            "1 when the Redis pub/sub connection is up, 0 when degraded",
            registry=r,
        )
        self.redis_connections = Gauge(
            "gchat_redis_connections",
            "Redis connections this node holds open, in use or idle (0 without Redis)",
            registry=r,
        )
        self.redis_reconnects = Counter(
            "gchat_redis_reconnects_total",
            "times the Redis pub/sub connection was re-established",
            registry=r,
        )
        self.degraded_polls = Counter(
            "gchat_broker_degraded_polls_total",
            "PostgreSQL polling rounds while Redis is down",
            registry=r,
        )
        self.ratelimit_fallbacks = Counter(
            "gchat_ratelimit_local_fallbacks_total",
            "rate checks answered locally, Redis down",
            registry=r,
        )
        # Runtime (gchat.runtime.samplers).
        self.event_loop_lag = Gauge(
            "gchat_event_loop_lag_seconds",
            "how late the event loop ran a timer, last sample (a busy or blocked loop)",
            registry=r,
        )
        self.event_loop_lag_histogram = Histogram(
            "gchat_event_loop_delay_seconds",
            "how late the event loop ran a timer, every sample",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.audit_unsequenced = Gauge(
            "gchat_audit_unsequenced_events",
            "audit events committed but not yet given a leaf in the audit log",
            registry=r,
        )
        self.audit_sequencer_lag = Gauge(
            "gchat_audit_sequencer_lag_seconds",
            "age of the oldest audit event without a leaf (0 when none waits)",
            registry=r,
        )
        self.audit_sequenced = Gauge(
            "gchat_audit_sequenced_leaves",
            "leaves this node appended to the audit log since it started (rate: sequencing speed)",
            registry=r,
        )
        self.audit_sequencer_leading = Gauge(
            "gchat_audit_sequencer_leading",
            "1 on the node that currently sequences and signs the audit log",
            registry=r,
        )

    def render(self) -> bytes:
        """Every metric in Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when it has none yet), for tests and checks."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


def bearer_access(token_sha256: str) -> Callable[[str | None], bool]:
    """Who may read /metrics on the client port: anyone, or holders of one token.

    The node keeps only the token's SHA-256 (``metrics_token_sha256``), so the
    configuration file does not hold the secret; the presented token is
    hashed and compared in constant time.
    """
    if not token_sha256:
        return lambda _header: True
    expected = bytes.fromhex(token_sha256)
    if len(expected) != hashlib.sha256().digest_size:
        raise ValueError("metrics_token_sha256 must be 64 hex digits (sha256sum of the token)")

    def allowed(header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        presented = hashlib.sha256(token.strip().encode()).digest()
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, expected)

    return allowed


def serve_separately(metrics: NodeMetrics, host: str, port: int) -> WSGIServer:
    """Serve /metrics on its own address (a thread of the library's WSGI server).

    For a scrape network apart from the clients' one; ``shutdown()`` stops it.
    """
    server, _thread = start_http_server(port, host, registry=metrics.registry)
    return server
