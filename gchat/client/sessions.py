"""Pairwise end-to-end sessions: X3DH + Double Ratchet with each peer device.

Why the rules below (docs/PROTOCOL.md §E6a): the server relays and labels
frames, and it must not be able to make us talk to, or believe, a key it
chose. So a session is only started with a device whose directory
certificate verifies against the pinned directory key; a session a peer
starts with us is only kept if the certificate inside its first message
verifies and names the identity key it used; a device is bound to an
official by that certificate and never moved; who sent a message is what
the binding says, never the ``deliver`` frame's labels; a prekey message
is accepted once; and a verified peer whose devices change cannot be sent
to until the user accepts the change.

Our one-time and signed prekeys live here too: they are what a peer uses
to start a session with us.
"""

import time
from collections.abc import Callable
from uuid import UUID

import msgspec

from crypto.certificate import verify_certificate
from crypto.errors import CryptoError
from crypto.identity import IdentityKeyPair
from crypto.prekeys import PrekeyPair, sign_prekey
from crypto.safety_number import format_safety_number, safety_number
from crypto.session import TYPE_PREKEY, PrekeyMessage, Session, message_type
from crypto.x3dh import PrekeyBundle
from gchat.client.errors import ClientSideError, NoDevices
from gchat.client.events import ClientEvent, Report
from gchat.client.rpc import ClientError, Rpc, retrying
from gchat.client.state import DeviceState, prekey_message_digest
from protocol import frames as f
from protocol.errors import ErrorCode

#: Signed prekeys kept after rotation, for prekey messages still on their way.
OLD_SIGNED_PREKEYS_KEPT = 2


class Content(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What is inside every pairwise ciphertext (MessagePack; see docs/PROTOCOL.md, Part II).

    The sender's certificate rides along so that a recipient can check who
    started a session without asking the server. A sender-key distribution
    for a group travels the same way, with ``sender_key`` and
    ``conversation_id`` set (absent from ordinary messages, which are
    unchanged on the wire). The copies of a message to another official that
    go to our own other devices name that official in ``recipient``, so they
    show it in the conversation it belongs to (PROTOCOL.md §E6a).
    """

    body: bytes
    certificate: bytes
    sender_key: bytes | None = None  # a crypto.sender_keys distribution message
    conversation_id: UUID | None = None
    recipient: UUID | None = None


_content_encoder = msgspec.msgpack.Encoder()
_content_decoder = msgspec.msgpack.Decoder(Content)


class TrustError(CryptoError):
    """A message refused by the trust rules: labels that disagree with the
    binding, a replayed prekey message, a sender key from a non-member,
    undecodable content."""


class DeviceChangeBlocked(ClientSideError):
    """A verified official's devices changed; sending waits for the user."""

    def __init__(self, official_id: UUID, new_keys: set[bytes]) -> None:
        super().__init__(
            f"the devices of official {official_id} changed since you verified them;"
            f" compare safety numbers again (gchat client safety-number --with {official_id})"
            " and run 'gchat client verify' or 'gchat client accept-devices'"
        )
        self.official_id = official_id
        self.new_keys = new_keys


def decode_content(plaintext: bytes) -> Content:
    try:
        return _content_decoder.decode(plaintext)
    except msgspec.MsgspecError as error:
        raise TrustError(f"undecodable content: {error}") from error


class PairwiseSessions:
    """Our sessions with peer devices, the bindings behind them, and our prekeys."""

    def __init__(
        self,
        state: DeviceState,
        identity: IdentityKeyPair,
        rpc: Rpc,
        report: Report,
        save: Callable[[], None],
    ) -> None:
        self.state = state
        self.identity = identity
        self._rpc = rpc
        self._report = report
        self._save = save

    # --- our prekeys ---------------------------------------------------------

    def new_prekeys(self, count: int) -> list[f.Prekey]:
        """``count`` fresh one-time prekeys (their private halves kept in the state)."""
        keys = []
        for _ in range(count):
            pair = PrekeyPair.generate(self.state.next_prekey_id)
            self.state.next_prekey_id += 1
            self.state.one_time_prekeys[pair.key_id] = pair.private_key
            keys.append(f.Prekey(key_id=pair.key_id, public_key=pair.public_key))
        return keys

    def new_signed_prekey(self) -> f.SignedPrekey:
        """A fresh signed prekey; the previous one stays for late prekey messages."""
        pair = PrekeyPair.generate(self.state.next_prekey_id)
        self.state.next_prekey_id += 1
        if self.state.signed_prekey is not None:
            old_id, old_private, _ = self.state.signed_prekey
            self.state.old_signed_prekeys[old_id] = old_private
            for key_id in sorted(self.state.old_signed_prekeys)[:-OLD_SIGNED_PREKEYS_KEPT]:
                del self.state.old_signed_prekeys[key_id]
                # No prekey message under it can be accepted any more.
                self.state.accepted_prekey_messages.pop(key_id, None)
        self.state.signed_prekey = (pair.key_id, pair.private_key, int(time.time()))
        return f.SignedPrekey(
            key_id=pair.key_id,
            public_key=pair.public_key,
            signature=sign_prekey(self.identity, pair),
        )

    def _signed_prekey(self, key_id: int) -> PrekeyPair:
        current = self.state.signed_prekey
        if current is not None and current[0] == key_id:
            return PrekeyPair(key_id, current[1])
        if key_id in self.state.old_signed_prekeys:
            return PrekeyPair(key_id, self.state.old_signed_prekeys[key_id])
        raise CryptoError("unknown signed prekey")

    # --- peers: certificates and bindings ----------------------------------------

    def verified(self, certificate: bytes, official_id: UUID, device_id: UUID) -> bytes:
        """The identity key ``certificate`` certifies for that official's device."""
        assert self.state.directory_key is not None, "device is not enrolled"
        cert = verify_certificate(certificate, self.state.directory_key)
        if cert.device_id != device_id or cert.official_id != official_id:
            raise CryptoError("certificate names another device or official")
        return cert.identity_key

    async def device_keys(
        self, official_id: UUID, device_ids: list[UUID] | None = None
    ) -> dict[UUID, f.DeviceBundle]:
        """Bundles of an official's active devices, each certificate verified."""
        bundle: f.Bundle = await self._rpc.request(
            f.GetBundle, official_id=official_id, device_ids=device_ids
        )
        for device in bundle.devices:
            self.verified(device.certificate, official_id, device.device_id)
        return {device.device_id: device for device in bundle.devices}

    def _bind(self, official_id: UUID, device_id: UUID, identity_key: bytes) -> None:
        """Bind a device from its verified certificate; report a new device of a known peer."""
        known = bool(self.state.devices_of(official_id)) or official_id in self.state.verified
        if self.state.bind(device_id, official_id, identity_key) and known:
            self._report(
                ClientEvent(
                    "new_device",
                    f"official {official_id} has a new device {device_id}",
                    official_id=official_id,
                    device_id=device_id,
                )
            )

    def bound_official(self, frame: f.Deliver) -> UUID | None:
        """The official the sending device is bound to; TrustError if the frame disagrees."""
        bound = self.state.peers.get(frame.sender_device)
        if bound is not None and bound != frame.sender_official:
            raise TrustError(
                f"deliver names official {frame.sender_official} but device"
                f" {frame.sender_device} is certified for official {bound}"
            )
        return bound

    async def establish(self, official_id: UUID, device_ids: list[UUID] | None = None) -> set[UUID]:
        """Start sessions with an official's devices (all, or ``device_ids``)."""
        started = set()
        for device_id, device in (await self.device_keys(official_id, device_ids)).items():
            if device_id == self.state.device_id:
                continue
            identity_key = self.verified(device.certificate, official_id, device_id)
            self._bind(official_id, device_id, identity_key)
            spk, otk = device.signed_prekey, device.one_time_prekey
            session = Session.initiate(
                self.identity,
                PrekeyBundle(
                    identity_key=identity_key,
                    signed_prekey_id=spk.key_id,
                    signed_prekey=spk.public_key,
                    signed_prekey_signature=spk.signature,
                    one_time_prekey_id=otk.key_id if otk else None,
                    one_time_prekey=otk.public_key if otk else None,
                ),
            )
            self.state.remember_session(device_id, session.to_bytes())
            if otk is None:
                self._report(
                    ClientEvent(
                        "no_one_time_prekey",
                        f"session with device {device_id} set up without a one-time prekey",
                        official_id=official_id,
                        device_id=device_id,
                    )
                )
            started.add(device_id)
        return started

    async def sync_devices(self, official_id: UUID) -> dict[UUID, bytes]:
        """The official's active devices and certified keys, as the directory lists them.

        New devices are bound (and get a session, so the one-time prekey
        the fetch spent is not wasted); bound devices no longer listed
        (revoked) are forgotten. Our own device is left out.
        """
        bundles = await self.device_keys(official_id)
        listed = set(bundles) - {self.state.device_id}
        for gone in self.state.devices_of(official_id) - listed:
            self.state.forget_device(gone)
        new = sorted(listed - self.state.devices_of(official_id))
        if new:
            await self.establish(official_id, new)
        self._save()
        return {d: self.state.peer_keys[d] for d in listed if d in self.state.peer_keys}

    # --- safety numbers --------------------------------------------------------

    async def safety_number(self, official_id: UUID) -> str:
        """The 60-digit safety number with ``official_id`` over all active devices of both.

        Both sides compute it from the directory's current device lists, so
        a device the server shows to one side only makes the numbers differ.
        """
        own = self.state.official_id
        assert own is not None, "device is not enrolled"
        theirs = await self.sync_devices(official_id)
        mine = {self.identity.public_key}
        if official_id != own:
            mine |= set((await self.sync_devices(own)).values())
        if not theirs:
            raise NoDevices(official_id)
        return safety_number(own, sorted(mine), official_id, sorted(theirs.values()))

    async def verify(self, official_id: UUID) -> str:
        """Mark the official's current devices verified (after comparing numbers)."""
        number = await self.safety_number(official_id)
        self.state.verified[official_id] = sorted(self.state.keys_of(official_id))
        self._save()
        return format_safety_number(number)

    def accept_devices(self, official_id: UUID) -> set[bytes]:
        """Accept a verified official's changed devices; returns the keys newly accepted."""
        if official_id not in self.state.verified:
            raise ValueError(f"official {official_id} is not verified; use verify instead")
        new = self.state.blocked_keys(official_id)
        self.state.verified[official_id] = sorted(self.state.keys_of(official_id))
        self._save()
        return new

    # --- sending -------------------------------------------------------------

    def encrypt_for(self, device_id: UUID, content: bytes) -> bytes:
        """``content`` encrypted in our current session with that device."""
        session = Session.from_bytes(self.state.sessions[device_id][0])
        ciphertext = session.encrypt(content)
        self.state.sessions[device_id][0] = session.to_bytes()
        return ciphertext

    async def send(
        self,
        recipient: UUID,
        plaintext: bytes,
        client_message_id: str,
        *,
        sender_key: tuple[UUID, bytes] | None = None,
    ) -> f.Accepted:
        """Encrypt for every device of the recipient and our own other devices.

        Devices come from our sessions; the server's ``device_mismatch``
        names the ones we lack (we fetch their bundles) and the ones that are
        gone (we drop their sessions), and we retry with the same client
        message id, so a retry of an accepted send is never stored twice.
        """
        own, me = self.state.official_id, self.state.device_id
        assert own is not None and me is not None and self.state.certificate is not None
        message = Content(
            body=plaintext,
            certificate=self.state.certificate,
            conversation_id=sender_key[0] if sender_key else None,
            sender_key=sender_key[1] if sender_key else None,
        )
        content = _content_encoder.encode(message)
        # Our own other devices learn whom it went to (not needed for notes to self).
        own_copy = (
            content
            if recipient == own
            else _content_encoder.encode(msgspec.structs.replace(message, recipient=recipient))
        )
        if not self.state.devices_of(recipient):
            await self.establish(recipient)

        async def attempt() -> f.Accepted:
            blocked = self.state.blocked_keys(recipient)
            if blocked:
                self._save()
                raise DeviceChangeBlocked(recipient, blocked)
            targets = (self.state.devices_of(recipient) | self.state.devices_of(own)) - {me}
            if not targets:
                raise NoDevices(recipient)
            mine = self.state.devices_of(own)
            envelopes = [
                f.Envelope(
                    device_id=device,
                    ciphertext=self.encrypt_for(device, own_copy if device in mine else content),
                )
                for device in sorted(targets)
            ]
            accepted: f.Accepted = await self._rpc.request(
                f.Send,
                client_message_id=client_message_id,
                recipient=recipient,
                envelopes=envelopes,
            )
            self._save()
            return accepted

        async def catch_up(error: ClientError) -> None:
            for device in error.frame.stale:
                self.state.forget_device(device)
            missing = set(error.frame.missing)
            if missing:
                missing -= await self.establish(recipient, sorted(missing))
            if missing and own != recipient:
                await self.establish(own, sorted(missing))

        return await retrying(ErrorCode.DEVICE_MISMATCH, attempt, catch_up)

    # --- receiving -------------------------------------------------------------

    def decrypt(self, frame: f.Deliver) -> tuple[Content, UUID]:
        """Decrypt with a session of that device, or accept the session it starts.

        Returns the content and the sending official *from the binding*.
        """
        device, ciphertext = frame.sender_device, frame.ciphertext
        bound = self.bound_official(frame)
        stored = self.state.sessions.get(device, [])
        for index, raw in enumerate(stored):
            session = Session.from_bytes(raw)
            if bound is None or session.remote_identity_key != self.state.peer_keys.get(device):
                continue  # not a session with the certified key: never use it
            try:
                plaintext = session.decrypt(ciphertext)
            except CryptoError:
                continue  # a failed decrypt changed nothing; try an older session
            # The message key is spent whatever the content is: keep the step.
            self.state.used_session(device, index, session.to_bytes())
            return decode_content(plaintext), bound
        if message_type(ciphertext) != TYPE_PREKEY:
            raise CryptoError("no session with that device can decrypt this")
        header = PrekeyMessage.from_bytes(ciphertext).header
        digest = prekey_message_digest(
            header.identity_key,
            header.ephemeral_key,
            header.signed_prekey_id,
            header.one_time_prekey_id,
        )
        if self.state.prekey_message_seen(header.signed_prekey_id, digest):
            raise TrustError("replayed prekey message (this session was set up already)")
        signed = self._signed_prekey(header.signed_prekey_id)
        one_time = None
        if header.one_time_prekey_id is not None:
            private = self.state.one_time_prekeys.get(header.one_time_prekey_id)
            if private is None:
                raise CryptoError("one-time prekey already used or unknown")
            one_time = PrekeyPair(header.one_time_prekey_id, private)
        session, plaintext = Session.accept(self.identity, signed, one_time, ciphertext)
        content = decode_content(plaintext)
        certified = self.verified(content.certificate, frame.sender_official, device)
        if certified != session.remote_identity_key:
            raise CryptoError("session started with an uncertified identity key")
        self._bind(frame.sender_official, device, certified)  # BindingConflict if moved
        if header.one_time_prekey_id is not None:
            del self.state.one_time_prekeys[header.one_time_prekey_id]
        else:
            self._report(
                ClientEvent(
                    "no_one_time_prekey",
                    f"device {device} set up a session without a one-time prekey",
                    frame.message_id,
                    frame.sender_official,
                    device,
                )
            )
        self.state.remember_prekey_message(header.signed_prekey_id, digest)
        working = False
        if stored:
            working = Session.from_bytes(stored[0]).has_received
        self.state.add_inbound_session(device, session.to_bytes(), working)
        return content, frame.sender_official
