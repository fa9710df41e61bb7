"""Directory policy, enforced: who may message whom, device limits, retention.

Policy rows are set by admins (``gchat.directory.administration``) per agency, or
globally by a superadmin; ``gchat.store.policies`` explains inheritance
(agency rows only tighten; the strictest value on the path to the root wins).

- ``send_refusal`` / ``check_send``: a pairwise send needs an active sender
  and recipient whom the policy lets talk (both sides' message scopes must
  allow it, so the relation is symmetric and a reply is always allowed).
  ``gchat.messaging.service`` asks ``send_refusal`` for a whole commit batch
  at once; ``check_send`` (one query) guards fetching someone's key bundle.
- ``DirectoryPolicy.may_converse``: the same rule for conversations and
  groups (``gchat.conversations.service``' hook), decided by agency.
- ``max_devices``: the device limit for an official's agency at enrolment.
- ``expire_undelivered``: envelopes older than their recipient's retention.
"""

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from gchat.errors import ServiceError
from gchat.store import policies
from gchat.store.database import Database, Executor
from protocol.errors import ErrorCode


async def check_send(db: Executor, sender_official: UUID, recipient_official: UUID) -> None:
    """Raise unless the sender may message the recipient now.

    ``db`` a connection of ``Database.pinned``, as every execution of
    :func:`~gchat.store.policies.send_standings` is.
    """
    found = await policies.send_standings(db, [sender_official, recipient_official])
    refusal = send_refusal(found, sender_official, recipient_official)
    if refusal is not None:
        raise refusal


def send_refusal(
    parties: dict[UUID, policies.SendStanding], sender_official: UUID, recipient_official: UUID
) -> ServiceError | None:
    """Why the sender may not message the recipient (None: they may), from loaded parties."""
    sender, recipient = parties.get(sender_official), parties.get(recipient_official)
    if sender is None or sender.status != "active":
        return ServiceError(ErrorCode.FORBIDDEN, "your official account is not active")
    if recipient is None or recipient.status != "active":
        return ServiceError(ErrorCode.NOT_FOUND, "no such active official")
    if not policies.may_message(sender, recipient):
        return ServiceError(
            ErrorCode.POLICY_REFUSED,
            f"directory policy does not allow messaging this official "
            f"(scope {policies.SCOPES[min(sender.scope_rank, recipient.scope_rank) - 1]})",
        )
    return None


async def max_devices(db: Executor, agency_id: UUID, default: int) -> int:
    """How many active devices an official of this agency may have."""
    found = await policies.effective(db, [agency_id], default, 2**31 - 1)
    effective = found.get(agency_id)
    return effective.max_devices if effective is not None else default


async def expire_undelivered(db: Executor, default_retention: int) -> int:
    """Drop envelopes past a retention shorter than the node's; returns how many."""
    return await policies.expire_by_policy(db, default_retention)


@dataclass(frozen=True)
class Party:
    """An official as conversation policy sees them: who, and in which agency."""

    official_id: UUID
    agency_id: UUID


class ConversationPolicy(Protocol):
    """May these two officials be in one conversation?

    ``gchat.conversations.service`` asks once per pair of distinct agencies
    among the members (with one official of each), so a policy must decide
    by agency.
    """

    async def may_converse(self, a: Party, b: Party) -> bool: ...


class DirectoryPolicy:
    """A ``ConversationPolicy`` from the directory's message scopes.

    With ``also`` (say the config's AgencyTreePolicy), both must agree.
    """

    def __init__(self, db: Database, also: ConversationPolicy | None = None) -> None:
        self._db = db
        self._also = also

    async def may_converse(self, a: Party, b: Party) -> bool:
        if self._also is not None and not await self._also.may_converse(a, b):
            return False
        # Pinned as the send check's transaction is: the same statement, one plan.
        async with self._db.pinned_transaction() as conn:
            found = await policies.send_standings(conn, [a.official_id, b.official_id])
        pa, pb = found.get(a.official_id), found.get(b.official_id)
        return pa is not None and pb is not None and policies.may_message(pa, pb)
