"""The server session state machine: the transition table and ``check``."""

from __future__ import annotations

import itertools
from uuid import UUID

import pytest

from protocol import frames as f
from protocol.errors import (
    AlreadyAuthenticated,
    ErrorCode,
    NotAllowedNow,
    NotAuthenticated,
    ProtocolError,
)
from protocol.session import AUTH_FRAMES, TRANSITIONS, Event, ServerSession, State

ID = UUID("00000000-0000-4000-8000-0000000000aa")
KEY = bytes(32)
SIG = bytes(64)

#: One valid instance of every client frame type.
SAMPLES: dict[type, f.ClientFrame] = {
    f.Auth: f.Auth(rid=1, device_id=ID, signature=SIG),
    f.AuthToken: f.AuthToken(rid=1, token="t"),
    f.Enroll: f.Enroll(
        rid=1,
        code="ABCDE-FGHJK-MNPQR-STVWX",
        identity_key=KEY,
        signature=SIG,
        signed_prekey=f.SignedPrekey(key_id=1, public_key=KEY, signature=SIG),
        one_time_prekeys=[],
        device_name="phone",
        platform="ios",
    ),
    f.CreateOfficial: f.CreateOfficial(rid=1, name="Somchai"),
    f.IssueCode: f.IssueCode(rid=1, official_id=ID),
    f.UploadPrekeys: f.UploadPrekeys(rid=1, one_time_prekeys=[]),
    f.GetBundle: f.GetBundle(rid=1, official_id=ID),
    f.Send: f.Send(
        rid=1,
        client_message_id="m",
        recipient=ID,
        envelopes=[f.Envelope(device_id=ID, ciphertext=b"x")],
    ),
    f.Ack: f.Ack(positions=[1]),
    # audit operations
    f.AuditQuery: f.AuditQuery(rid=1, official_id=ID),
    f.AuditGetTreeHead: f.AuditGetTreeHead(rid=1),
    f.AuditGetInclusion: f.AuditGetInclusion(rid=1, leaf_index=0, tree_size=1),
    f.AuditGetConsistency: f.AuditGetConsistency(rid=1, old_size=1, new_size=2),
    f.AuditExport: f.AuditExport(rid=1),
    f.AuditListAccesses: f.AuditListAccesses(rid=1),
    # push notifications
    f.GetPushConfig: f.GetPushConfig(rid=1),
    f.RegisterPush: f.RegisterPush(
        rid=1, endpoint="https://push.example/s", p256dh=b"\x04" + bytes(64), auth=bytes(16)
    ),
    f.UnregisterPush: f.UnregisterPush(rid=1),
    f.UploadBegin: f.UploadBegin(rid=1, size=1, recipient=ID),
    f.UploadResume: f.UploadResume(rid=1, attachment_id=ID),
    f.UploadChunk: f.UploadChunk(
        rid=1, attachment_id=ID, capability=bytes(50), offset=0, data=b"x"
    ),
    f.DownloadBegin: f.DownloadBegin(rid=1, attachment_id=ID),
    f.DownloadChunk: f.DownloadChunk(
        rid=1, attachment_id=ID, capability=bytes(50), offset=0, length=1
    ),
    f.DownloadDone: f.DownloadDone(rid=1, attachment_id=ID),
    # conversations and groups
    f.OpenDirect: f.OpenDirect(rid=1, official_id=ID),
    f.CreateGroup: f.CreateGroup(rid=1, title="desk", members=[ID]),
    f.AddMembers: f.AddMembers(rid=1, conversation_id=ID, officials=[ID]),
    f.RemoveMembers: f.RemoveMembers(rid=1, conversation_id=ID, officials=[ID]),
    f.LeaveGroup: f.LeaveGroup(rid=1, conversation_id=ID),
    f.SetGroupAdmin: f.SetGroupAdmin(rid=1, conversation_id=ID, official_id=ID, admin=True),
    f.RenameGroup: f.RenameGroup(rid=1, conversation_id=ID, title="t"),
    f.SetAnnouncementOnly: f.SetAnnouncementOnly(
        rid=1, conversation_id=ID, announcement_only=True
    ),
    f.GetConversation: f.GetConversation(rid=1, conversation_id=ID),
    f.SendGroup: f.SendGroup(
        rid=1, client_message_id="g", conversation_id=ID, seq=1, ciphertext=b"x"
    ),
    # directory administration
    f.CreateAgency: f.CreateAgency(rid=1, code="MOI", name_en="Interior"),
    f.UpdateAgency: f.UpdateAgency(rid=1, agency_id=ID, name_th="มหาดไทย"),
    f.MoveAgency: f.MoveAgency(rid=1, agency_id=ID, parent_id=None),
    f.ListAgencies: f.ListAgencies(rid=1),
    f.UpdateOfficial: f.UpdateOfficial(rid=1, official_id=ID, position=""),
    f.MoveOfficial: f.MoveOfficial(rid=1, official_id=ID, agency_id=ID),
    f.SetOfficialStatus: f.SetOfficialStatus(rid=1, official_id=ID, status="suspended"),
    f.GetOfficial: f.GetOfficial(rid=1, official_id=ID),
    f.ListOfficials: f.ListOfficials(rid=1),
    f.GrantRole: f.GrantRole(rid=1, official_id=ID, role="auditor", scope_agency_id=ID),
    f.RevokeRole: f.RevokeRole(rid=1, official_id=ID, role="auditor"),
    f.ListDevices: f.ListDevices(rid=1, official_id=ID),
    f.RevokeDevice: f.RevokeDevice(rid=1, device_id=ID),
    f.ListCodes: f.ListCodes(rid=1, official_id=ID),
    f.ListPendingCodes: f.ListPendingCodes(rid=1),
    f.CancelCode: f.CancelCode(rid=1, code_id=ID),
    f.SetPolicy: f.SetPolicy(rid=1, policy=f.PolicyInfo(message_scope="agency")),
    f.GetPolicy: f.GetPolicy(rid=1),
    f.SearchOfficials: f.SearchOfficials(rid=1, query="สมชาย"),
    f.ImportBegin: f.ImportBegin(rid=1),
    f.ImportRows: f.ImportRows(rid=1, import_id=ID, rows=[f.ImportRow(line=2)]),
    f.ImportApply: f.ImportApply(rid=1, import_id=ID),
    f.ImportDiscard: f.ImportDiscard(rid=1, import_id=ID),
}
OPENING = [SAMPLES[t] for t in AUTH_FRAMES]
OTHERS = [frame for t, frame in SAMPLES.items() if t not in AUTH_FRAMES]


def session_in(state: State) -> ServerSession:
    session = ServerSession()
    session.state = state
    return session


def frame_id(frame: object) -> str:
    return type(frame).__name__


def test_samples_cover_every_client_frame() -> None:
    assert set(SAMPLES) == set(f.CLIENT_FRAME_TYPES)
    assert set(AUTH_FRAMES) == {f.Auth, f.AuthToken, f.Enroll}


def test_a_new_session_is_unauthenticated() -> None:
    session = ServerSession()
    assert session.state is State.UNAUTHENTICATED
    assert not session.authenticated


# --- the transition table ----------------------------------------------------------

EXPECTED = {
    (State.UNAUTHENTICATED, Event.AUTHENTICATED): State.AUTHENTICATED,
    (State.UNAUTHENTICATED, Event.CLOSE): State.CLOSING,
    (State.UNAUTHENTICATED, Event.CLOSED): State.CLOSED,
    (State.AUTHENTICATED, Event.CLOSE): State.CLOSING,
    (State.AUTHENTICATED, Event.CLOSED): State.CLOSED,
    (State.CLOSING, Event.CLOSE): State.CLOSING,
    (State.CLOSING, Event.CLOSED): State.CLOSED,
    (State.CLOSED, Event.CLOSE): State.CLOSED,
    (State.CLOSED, Event.CLOSED): State.CLOSED,
}
ALL_PAIRS = list(itertools.product(State, Event))


def test_the_table_is_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda x: x.value)
def test_every_state_event_pair(state: State, event: Event) -> None:
    session = session_in(state)
    if (state, event) in TRANSITIONS:
        assert session.handle(event) is TRANSITIONS[(state, event)]
        assert session.state is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(NotAllowedNow):
            session.handle(event)
        assert session.state is state  # a refused event changes nothing


def test_absent_pairs_are_exactly_the_impossible_ones() -> None:
    absent = {pair for pair in ALL_PAIRS if pair not in TRANSITIONS}
    assert absent == {
        (State.AUTHENTICATED, Event.AUTHENTICATED),  # authenticating twice
        (State.CLOSING, Event.AUTHENTICATED),  # auth finishing after a close began
        (State.CLOSED, Event.AUTHENTICATED),
    }


def test_invalid_state_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        session_in(State.CLOSED).handle(Event.AUTHENTICATED)


def test_closed_is_terminal() -> None:
    for event in Event:
        session = session_in(State.CLOSED)
        try:
            session.handle(event)
        except NotAllowedNow:
            pass
        assert session.state is State.CLOSED


def test_a_whole_life() -> None:
    session = ServerSession()
    assert session.handle(Event.AUTHENTICATED) is State.AUTHENTICATED
    assert session.authenticated
    assert session.handle(Event.CLOSE) is State.CLOSING
    assert not session.authenticated
    assert session.handle(Event.CLOSE) is State.CLOSING  # close is idempotent
    assert session.handle(Event.CLOSED) is State.CLOSED


# --- check(): which frames in which state ------------------------------------------


@pytest.mark.parametrize("frame", OPENING, ids=frame_id)
def test_auth_frames_are_allowed_unauthenticated(frame: f.ClientFrame) -> None:
    session_in(State.UNAUTHENTICATED).check(frame)


@pytest.mark.parametrize("frame", OPENING, ids=frame_id)
def test_auth_frames_are_refused_when_authenticated(frame: f.ClientFrame) -> None:
    with pytest.raises(AlreadyAuthenticated) as caught:
        session_in(State.AUTHENTICATED).check(frame)
    assert caught.value.code == ErrorCode.ALREADY_AUTHENTICATED


@pytest.mark.parametrize("frame", OTHERS, ids=frame_id)
def test_other_frames_need_authentication(frame: f.ClientFrame) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        session_in(State.UNAUTHENTICATED).check(frame)
    assert caught.value.code == ErrorCode.NOT_AUTHENTICATED


@pytest.mark.parametrize("frame", OTHERS, ids=frame_id)
def test_other_frames_are_allowed_authenticated(frame: f.ClientFrame) -> None:
    session_in(State.AUTHENTICATED).check(frame)


@pytest.mark.parametrize("state", [State.CLOSING, State.CLOSED], ids=lambda s: s.value)
@pytest.mark.parametrize("frame", list(SAMPLES.values()), ids=frame_id)
def test_nothing_is_allowed_while_closing_or_closed(state: State, frame: f.ClientFrame) -> None:
    with pytest.raises(NotAllowedNow) as caught:
        session_in(state).check(frame)
    assert not isinstance(caught.value, AlreadyAuthenticated)


def test_check_never_changes_the_state() -> None:
    for state in State:
        for frame in SAMPLES.values():
            session = session_in(state)
            try:
                session.check(frame)
            except NotAllowedNow:
                pass
            assert session.state is state
