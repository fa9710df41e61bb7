"""The one error type services raise for a client to see.

If it does not make sense to show a client, it is not a ServiceError
(Synapse's rule): anything else is a bug, logged and answered with
``internal_error`` without details.
"""

from uuid import UUID

from protocol.errors import ErrorCode


class ServiceError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        missing: list[UUID] | None = None,
        stale: list[UUID] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.missing = missing or []
        self.stale = stale or []
        self.retry_after = retry_after
