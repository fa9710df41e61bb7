"""Names for ids and ids for names, asked of the server over the protocol.

Why: people know agencies by code (``MOI-DOPA``) and officials by name or
employee id, not by UUID. Commands take codes wherever they take an agency,
and print names next to the ids they show, when the device's official may
read them (an id is shown as it is otherwise, never a guess).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator

from gchat.client.cli_errors import UserError
from gchat.client.rpc import ClientError
from gchat.client.sdk import Client
from protocol import frames as f
from protocol import limits


def parse_uuid(text: str, what: str) -> uuid.UUID:
    """A UUID typed by a person; a plain sentence when it is not one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise UserError(
            f"{text!r} is not {what} id (a UUID such as 0b6f8e1c-3f0a-4c1e-9d5e-2a7c1b9f4e21)"
        ) from None


async def agency_codes(client: Client) -> dict[uuid.UUID, str]:
    """Every agency the device's official may see: id -> code (empty if none)."""
    try:
        reply: f.AgencyList = await client.request(f.ListAgencies)
    except ClientError:
        return {}
    return {a.id: a.code for a in reply.agencies}


async def agency_id(client: Client, text: str | None) -> uuid.UUID | None:
    """An agency named by code or by id."""
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    try:
        reply: f.AgencyList = await client.request(f.ListAgencies)
    except ClientError:
        raise UserError(
            f"cannot look up the agency code {text}: you may not list "
            "agencies; give the agency's id instead"
        ) from None
    for agency in reply.agencies:
        if agency.code == text:
            return agency.id
    known = ", ".join(sorted(a.code for a in reply.agencies)[:10])
    raise UserError(f"no agency with the code {text} (agencies you can see: {known or 'none'})")


class Names:
    """Officials' display names, fetched once each (``None``: not ours to read)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._names: dict[uuid.UUID, str | None] = {}

    async def official(self, official_id: uuid.UUID | str | None) -> str:
        """``name (short id)``, or the id alone when the name cannot be read."""
        if official_id is None:
            return ""
        oid = official_id if isinstance(official_id, uuid.UUID) else uuid.UUID(official_id)
        if oid not in self._names:
            try:
                reply: f.OfficialReply = await self._client.request(f.GetOfficial, official_id=oid)
                o = reply.official
                self._names[oid] = o.name_th or o.name_en
            except ClientError:
                self._names[oid] = None
        name = self._names[oid]
        return f"{name} ({str(oid)[:8]})" if name else str(oid)


async def official_pages(
    client: Client, agency: uuid.UUID | None, status: str | None
) -> AsyncIterator[list[f.OfficialInfo]]:
    """Every official of an agency's subtree (default: the caller's scope), page by page.

    Keyset paging (``after``): each page costs the server the same however
    far into the directory it is, and the caller holds one page at a time
    (and the next one in flight: the server reads it while the caller
    writes this one).
    """

    def ask(after: uuid.UUID | None) -> "asyncio.Future[f.OfficialList]":
        return asyncio.ensure_future(
            client.request(
                f.ListOfficials, agency_id=agency, status=status, after=after, limit=limits.MAX_PAGE
            )
        )

    pending = ask(None)
    try:
        while True:
            page = await pending
            if page.next_after is not None:
                pending = ask(page.next_after)
            yield page.officials
            if page.next_after is None:
                return
    finally:
        pending.cancel()  # a caller that stopped early: no request left behind


async def all_officials(
    client: Client, agency: uuid.UUID | None, status: str | None
) -> list[f.OfficialInfo]:
    """Every official of an agency's subtree (default: the caller's scope), all pages."""
    return [o async for page in official_pages(client, agency, status) for o in page]
