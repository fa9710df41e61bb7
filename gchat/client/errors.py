"""Failures of the client itself, apart from the server's refusals.

Why a type of its own: ``ClientError`` (``gchat.client.rpc``) means the
server answered an error frame with a protocol ``ErrorCode``. When the
client cannot do what was asked before asking anyone (nobody to encrypt
for, a verified peer's devices changed), inventing an error frame with a
code the protocol lacks would tell the user the server said something it
never said. These say what the client found instead.
"""

from uuid import UUID


class ClientSideError(Exception):
    """The client cannot do what was asked; ``str()`` says why in one sentence."""


class NoDevices(ClientSideError):
    """No device to encrypt for: the official has none active (or only this one)."""

    def __init__(self, official_id: UUID) -> None:
        super().__init__(f"official {official_id} has no active device to send to")
        self.official_id = official_id
