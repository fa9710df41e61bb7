"""Who is on the other end of an authenticated connection."""

from dataclasses import dataclass
from uuid import UUID

from gchat.store.directory import Role


@dataclass(frozen=True)
class Principal:
    device_id: UUID
    official_id: UUID
    agency_id: UUID
    roles: tuple[Role, ...]

    def role(self, name: str) -> Role | None:
        return next((r for r in self.roles if r.role == name), None)

    @property
    def role_names(self) -> list[str]:
        return [r.role for r in self.roles]
