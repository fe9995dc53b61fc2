"""Domain errors. The API maps each to a problem+json status; nothing else should leak."""

from __future__ import annotations


class DomainError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class InvalidRequest(DomainError):
    status = 422
    title = "Invalid request"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class InvalidTransition(Conflict):
    title = "Invalid state transition"


class UnsupportedProtocol(DomainError):
    status = 400
    title = "Unsupported protocol version"


class OverQuota(DomainError):
    status = 403
    title = "Over quota"
