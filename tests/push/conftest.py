"""Push tests run real nodes over real PostgreSQL (the integration fixtures)."""

from tests.integration.conftest import node, world  # noqa: F401
