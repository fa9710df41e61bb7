"""CPU per audit event of writing its stored form: the two encoders, one run.

    python -m loadtests.audit_encode [--events 20000] [--rounds 7] [--kind accepted]

Every message costs two audit events ("message.accepted" in the sender's
commit, "message.delivered" in the ack's delete), each written by
``AuditLog.record`` inside that transaction: its canonical JSON, its leaf
hash and its compact stored form (``gchat.store.audit_codec``). This times
that Python work (process CPU time, not wall time, so other processes on a
shared machine disturb it little) for both encoders of the stored form,
alternated round by round: ``scan`` (the canonical JSON scanned by a regex,
as the node did from the compact storage on) and ``fields`` (written from
the entry's fields, as the node writes other events) and ``template``
(``AcceptedCodec`` / ``DeliveredCodec``, as the node writes message events
now). Each prints the median of the rounds in microseconds per event, and
the ratios to ``scan``. ``--kind`` times one kind's events only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from gchat.audit.log import AuditEvent, _accepted, entry_fields, involved
from gchat.audit.merkle import leaf_hash
from gchat.store import audit_codec as codec
from protocol.frames import wire_time


def _events(n: int) -> list[AuditEvent]:
    """Message events as the node writes them, accepted and delivered alternating."""
    u = uuid.uuid4
    out = []
    for _ in range(n // 2):
        sender, device, recipient, rdevice, message = u(), u(), u(), u(), u()
        out.append(AuditEvent(
            "message.accepted", actor_official=sender, actor_device=device,
            subject_official=recipient,
            details={"message_id": message, "sent_at": wire_time(datetime.now(UTC)),
                     "ciphertext_bytes": 348, "recipient_devices": [rdevice]}))
        out.append(AuditEvent(
            "message.delivered", actor_official=recipient, actor_device=rdevice,
            details={"message_id": message, "position": 12345, "sender_official": sender,
                     "sender_device": device}))
    return out


def _scan(event: AuditEvent, at: datetime, time_text: str, agency: uuid.UUID) -> bytes:
    officials, devices = involved(event)
    entry = codec.canonical_json(entry_fields(event, codec.time_text(at)))
    leaf_hash(entry)
    return codec.encode(entry, event.kind, officials, [agency], devices, at)


def _fields(event: AuditEvent, at: datetime, time_text: str, agency: uuid.UUID) -> bytes:
    officials, devices = involved(event)
    fields = entry_fields(event, time_text)
    leaf_hash(codec.canonical_json(fields))
    return codec.encode_fields(fields, event.kind, officials, [agency], devices, time_text)


_ACCEPTED, _DELIVERED = codec.AcceptedCodec(), codec.DeliveredCodec()


def _template(event: AuditEvent, at: datetime, time_text: str, agency: uuid.UUID) -> bytes:
    """As ``AuditLog.encode`` / ``record_delivered`` write message events, given the
    officials' agencies (a send's policy check, an ack's delete read them)."""
    agencies = {event.actor_official: agency, event.subject_official: agency,
                event.details.get("sender_official"): agency}
    values = _accepted(event)
    if values is not None:
        entry, stored = _ACCEPTED.encode(values, agencies, time_text)  # type: ignore[arg-type]
    else:
        d = event.details
        delivered = (event.actor_official, event.actor_device, d["message_id"], d["position"],
                     d["sender_official"], d["sender_device"])
        ((entry, stored),) = _DELIVERED.encode(
            [delivered], agencies, time_text)  # type: ignore[list-item, arg-type]
    leaf_hash(entry)
    return stored


ENCODERS: dict[str, Callable[[AuditEvent, datetime, str, uuid.UUID], bytes]] = {
    "scan": _scan, "fields": _fields, "template": _template}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--kind", choices=("accepted", "delivered"))
    args = parser.parse_args()
    events = _events(args.events * (2 if args.kind else 1))
    events = [e for e in events if args.kind is None or e.kind == f"message.{args.kind}"]
    at = datetime.now(UTC)
    text, agency = codec.time_text(at), uuid.uuid4()
    for event in events[:50]:  # the same bytes either way
        assert _fields(event, at, text, agency) == _template(event, at, text, agency)
        assert codec.decode(_fields(event, at, text, agency), at) == codec.decode(
            _scan(event, at, text, agency), at)
    per_event: dict[str, list[float]] = {name: [] for name in ENCODERS}
    for r in range(args.rounds):
        for name in ENCODERS if r % 2 == 0 else reversed(ENCODERS):
            encode = ENCODERS[name]
            started = time.process_time()
            for event in events:
                encode(event, at, text, agency)
            per_event[name].append((time.process_time() - started) / len(events) * 1e6)
    medians = {name: statistics.median(v) for name, v in per_event.items()}
    print(json.dumps({"kind": args.kind, "us_per_event": per_event, "median_us": medians,
                      "ratio_fields_to_scan": medians["fields"] / medians["scan"],
                      "ratio_template_to_fields": medians["template"] / medians["fields"],
                      "load_average": os.getloadavg()}))
    print(f"{args.kind or 'accepted and delivered'}: scan {medians['scan']:.1f} us/event, "
          f"fields {medians['fields']:.1f} ({medians['fields'] / medians['scan']:.2f}x), "
          f"template {medians['template']:.1f} "
          f"({medians['template'] / medians['fields']:.2f}x of fields); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
