"""Stateful property tests of pairwise sessions under a hostile network.

Parties exchange messages over pairwise sessions while the network loses,
reorders, duplicates and tampers with them. A small independent model of
the receiving side (driven only by the public ratchet headers) predicts
whether each delivery must succeed, be refused as a replay, or hit the
skipped-key cap; the real session must agree, and every refused or tampered
message must leave the serialised session byte-for-byte unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from crypto_testkit import Device
from hypothesis import event, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import crypto.ratchet as ratchet_mod
from crypto.errors import CryptoError, ReplayedMessage, TooManySkippedMessages
from crypto.ratchet import HEADER_SIZE, RatchetHeader
from crypto.session import TYPE_PREKEY, PrekeyMessage, Session

CAP = 4  # a small MAX_SKIP so the cap is actually exercised


@dataclass
class Sent:
    sender: str
    receiver: str
    wire: bytes
    plaintext: bytes
    delivered: bool = False


@dataclass
class ChainModel:
    """What the receiver should know, from headers only."""

    dhr: bytes | None = None
    nr: int = 0
    skipped: set[tuple[bytes, int]] = field(default_factory=set)
    previous: set[bytes] = field(default_factory=set)

    def copy(self) -> ChainModel:
        return ChainModel(self.dhr, self.nr, set(self.skipped), set(self.previous))

    def receive(self, h: RatchetHeader) -> str:
        """Apply a delivery; return "ok", "replay" or "cap" (self unchanged unless ok)."""
        m = self.copy()
        if (h.dh, h.n) in m.skipped:
            m.skipped.discard((h.dh, h.n))
        else:
            if h.dh == m.dhr:
                if h.n < m.nr:
                    return "replay"
            elif h.dh in m.previous:
                return "replay"
            else:
                # One message may cost CAP derivations, both chains together.
                rest = max(h.pn - m.nr, 0) if m.dhr is not None else 0
                if rest + h.n > CAP:
                    return "cap"
                if m.dhr is not None:
                    m.skipped |= {(m.dhr, i) for i in range(m.nr, h.pn)}
                    m.previous.add(m.dhr)
                m.dhr, m.nr = h.dh, 0
            if h.n - m.nr > CAP:
                return "cap"
            m.skipped |= {(m.dhr, i) for i in range(m.nr, h.n)}
            m.nr = h.n + 1
        self.__dict__.update(m.__dict__)
        return "ok"


def _ratchet_part(wire: bytes) -> bytes:
    if wire[0] == TYPE_PREKEY:
        return PrekeyMessage.from_bytes(wire).ratchet_message
    return wire[1:]


class PairwiseMachine(RuleBasedStateMachine):
    PARTIES: tuple[str, ...] = ("alice", "bob")

    def __init__(self) -> None:
        super().__init__()
        self._saved_cap = ratchet_mod.MAX_SKIP
        ratchet_mod.MAX_SKIP = CAP
        self.devices = {p: Device() for p in self.PARTIES}
        self.sessions: dict[tuple[str, str], Session] = {}
        self.models: dict[tuple[str, str], ChainModel] = {}
        self.net: list[Sent] = []
        self.counter = 0
        for i, x in enumerate(self.PARTIES):
            for y in self.PARTIES[i + 1:]:
                # x initiates towards y; y gets a session on first delivery.
                self.sessions[(x, y)] = Session.initiate(self.devices[x].identity,
                                                         self.devices[y].bundle())
                self.models[(y, x)] = ChainModel()
                self.models[(x, y)] = ChainModel()

    def teardown(self) -> None:
        ratchet_mod.MAX_SKIP = self._saved_cap

    def _pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for a in self.PARTIES for b in self.PARTIES if a != b]

    def _senders(self) -> list[tuple[str, str]]:
        return sorted(k for k in self.sessions)

    @rule(data=st.data(), count=st.integers(1, CAP + 3), size=st.integers(0, 40))
    def send(self, data: st.DataObject, count: int, size: int) -> None:
        """Send a burst; bursts longer than CAP make the cap reachable."""
        sender, receiver = data.draw(st.sampled_from(self._senders()))
        session = self.sessions[(sender, receiver)]
        for _ in range(count):
            self.counter += 1
            plaintext = f"{sender}->{receiver} #{self.counter} ".encode() + b"x" * size
            self.net.append(Sent(sender, receiver, session.encrypt(plaintext), plaintext))

    def _undelivered(self) -> list[Sent]:
        return [m for m in self.net if not m.delivered]

    @precondition(lambda self: bool(self._undelivered()))
    @rule(data=st.data())
    def deliver_new(self, data: st.DataObject) -> None:
        """Deliver an undelivered message, in any order (others may be lost)."""
        self._deliver(data.draw(st.sampled_from(self._undelivered())))

    @precondition(lambda self: bool(self._undelivered()))
    @rule()
    def deliver_oldest(self) -> None:
        """In-order delivery, so that conversations make progress."""
        self._deliver(self._undelivered()[0])

    @precondition(lambda self: any(m.delivered for m in self.net))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """Deliver a duplicate of a message that was already delivered."""
        self._deliver(data.draw(st.sampled_from([m for m in self.net if m.delivered])))

    def _deliver(self, msg: Sent) -> None:
        key = (msg.receiver, msg.sender)
        model = self.models[key]
        header = RatchetHeader.from_bytes(_ratchet_part(msg.wire)[:HEADER_SIZE])
        expected = model.receive(header)
        event(f"deliver: {expected}")
        session = self.sessions.get(key)
        if session is None:
            assert msg.wire[0] == TYPE_PREKEY
            try:
                session, plaintext = self.devices[msg.receiver].accept(msg.wire)
            except TooManySkippedMessages:
                assert expected == "cap", expected
                return
            self.sessions[key] = session
        else:
            before = session.to_bytes()
            try:
                plaintext = session.decrypt(msg.wire)
            except ReplayedMessage:
                assert expected == "replay", expected
                assert msg.delivered or header.n < model.nr
                assert session.to_bytes() == before
                return
            except TooManySkippedMessages:
                assert expected == "cap", expected
                assert session.to_bytes() == before
                return
        assert expected == "ok", expected
        assert not msg.delivered, "a message decrypted twice"
        assert plaintext == msg.plaintext
        msg.delivered = True

    @precondition(lambda self: bool(self.net))
    @rule(data=st.data(), position=st.integers(0, 10_000), bit=st.integers(0, 7))
    def tamper(self, data: st.DataObject, position: int, bit: int) -> None:
        msg = data.draw(st.sampled_from(self.net))
        session = self.sessions.get((msg.receiver, msg.sender))
        if session is None:
            return
        forged = bytearray(msg.wire)
        forged[position % len(forged)] ^= 1 << bit
        before = session.to_bytes()
        with pytest.raises(CryptoError):
            session.decrypt(bytes(forged))
        assert session.to_bytes() == before

    @rule(data=st.data())
    def save_and_restore(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.sessions)))
        blob = self.sessions[key].to_bytes()
        self.sessions[key] = Session.from_bytes(blob)
        assert self.sessions[key].to_bytes() == blob

    @invariant()
    def skipped_keys_bounded(self) -> None:
        for s in self.sessions.values():
            assert s._ratchet.skipped_count <= ratchet_mod.MAX_STORED_SKIPPED


class ThreePartyMachine(PairwiseMachine):
    PARTIES = ("alice", "bob", "carol")


TwoPartyTest = PairwiseMachine.TestCase
TwoPartyTest.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
ThreePartyTest = ThreePartyMachine.TestCase
ThreePartyTest.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
