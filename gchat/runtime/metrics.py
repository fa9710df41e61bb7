"""A small metrics registry rendered as Prometheus text (exposition format 0.0.4).

No client library and no globals: ``gchat.app`` builds one ``NodeMetrics``
per node and passes it by constructor to whatever counts something. The
registry knows three kinds:

- ``Counter``: only goes up (``inc``), optionally with labels;
- ``Gauge``: set, moved up and down, or sampled from a callback at scrape
  time (``Gauge.sample``), which is how live state (Redis up, connections)
  is shown without bookkeeping on the hot path;
- ``Histogram``: cumulative buckets plus ``_sum`` and ``_count``.

Updates are plain attribute arithmetic on the event loop's thread: cheap
enough for the per-frame counters.
"""

import logging
import math
from collections.abc import Callable, Sequence

log = logging.getLogger("gchat.runtime.metrics")

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: LabelValues, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels) if labels or self.labelnames else ()
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels) if labels or self.labelnames else (), 0.0)

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.labelnames, key)} {_format(v)}"
            for key, v in sorted(self._values.items())
        ]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._value = 0.0
        self._sample: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self._value = value

    def inc(self, amount: float = 1.0) -> None:
        self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._value -= amount

    def sample(self, source: Callable[[], float]) -> None:
        """Read the value from ``source`` at every scrape instead."""
        self._sample = source

    @property
    def value(self) -> float:
        return float(self._sample()) if self._sample is not None else self._value

    def samples(self) -> list[str]:
        return [f"{self.name} {_format(self.value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self._counts[i] += 1
                break

    def samples(self) -> list[str]:
        lines = []
        cumulative = 0
        for bound, count in zip(self.buckets, self._counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_format(bound)}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_format(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = Counter(name, help_text, labelnames)
        self._add(metric)
        return metric

    def gauge(self, name: str, help_text: str) -> Gauge:
        metric = Gauge(name, help_text)
        self._add(metric)
        return metric

    def histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> Histogram:
        metric = Histogram(name, help_text, buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """Every metric in Prometheus text format, ending with a newline."""
        lines: list[str] = []
        for metric in self._metrics.values():
            try:
                samples = metric.samples()
            except Exception:  # a failing sampler must not take /metrics down
                log.exception("metric %s failed to sample", metric.name)
                continue
            lines.extend(metric.header())
            lines.extend(samples)
        return "\n".join(lines) + "\n"


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class NodeMetrics:
    """The metrics one node exposes on /metrics (names prefixed ``gchat_``)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.connections = r.gauge("gchat_connections", "open WebSocket connections")
        self.authenticated = r.gauge(
            "gchat_authenticated_connections", "connections with an authenticated device"
        )
        self.frames_in = r.counter("gchat_frames_in_total", "frames received from clients")
        self.frames_out = r.counter("gchat_frames_out_total", "frames sent to clients")
        self.sends_accepted = r.counter(
            "gchat_sends_accepted_total", "send requests answered accepted"
        )
        self.sends_refused = r.counter(
            "gchat_sends_refused_total", "send requests answered with an error", ["code"]
        )
        self.errors = r.counter("gchat_errors_total", "error frames sent, by code", ["code"])
        self.commit_batches = r.counter("gchat_commit_batches_total", "group commits")
        self.commit_failures = r.counter("gchat_commit_failures_total", "failed group commits")
        self.messages_committed = r.counter(
            "gchat_messages_committed_total", "sends committed (including idempotent repeats)"
        )
        self.commit_batch_size = r.histogram(
            "gchat_commit_batch_size", "sends per group commit", _BATCH_BUCKETS
        )
        self.commit_latency = r.histogram(
            "gchat_commit_latency_seconds", "time to write one group commit", _LATENCY_BUCKETS
        )
        self.deliveries = r.counter("gchat_deliveries_total", "envelopes pushed to devices")
        self.inbox_envelopes = r.gauge(
            "gchat_inbox_envelopes",
            "envelopes waiting in all inboxes (PostgreSQL's live-row estimate, every 15 s)",
        )
        self.acks = r.counter("gchat_acks_total", "envelope positions acknowledged by devices")
        self.broker_published = r.counter(
            "gchat_broker_published_total", "signals published to other nodes"
        )
        self.broker_received = r.counter(
            "gchat_broker_received_total", "signals received from other nodes"
        )
        self.broker_publish_failures = r.counter(
            "gchat_broker_publish_failures_total", "signals that could not be published"
        )
        self.broker_healthy = r.gauge(
            "gchat_broker_healthy", "1 when signals flow between nodes (Redis up or single node)"
        )
        self.redis_up = r.gauge(
            "gchat_redis_up", "1 when the Redis pub/sub connection is up, 0 when degraded"
        )
        self.redis_reconnects = r.counter(
            "gchat_redis_reconnects_total", "times the Redis pub/sub connection was re-established"
        )
        self.degraded_polls = r.counter(
            "gchat_broker_degraded_polls_total", "PostgreSQL polling rounds while Redis is down"
        )
        self.ratelimit_fallbacks = r.counter(
            "gchat_ratelimit_local_fallbacks_total", "rate checks answered locally, Redis down"
        )

    def render(self) -> str:
        return self.registry.render()
