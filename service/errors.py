"""Every error a client can cause, with its HTTP status, in one table.

Handlers raise these; one exception handler turns them into ``{"error": "..."}`` with the status
below and counts them by ``reason`` in the metrics. Anything else that escapes is a bug (500).
"""

from __future__ import annotations

# nginx's status for a client that closed its connection before its answer: counted in the request
# metrics (a 4xx, not a server error), never sent.
CLIENT_CLOSED_REQUEST = 499


class ServiceError(Exception):
    status: int = 500
    reason: str = "internal"
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    """Undecodable image, malformed JSON or multipart body."""

    status, reason = 400, "bad_request"


class Unauthorized(ServiceError):
    status, reason = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": "ApiKey"}


class NotFound(ServiceError):
    status, reason = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, reason = 405, "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.headers = {"Allow": allow}


class PayloadTooLarge(ServiceError):
    """Too many bytes, too many pixels (decompression bombs) or too many images in one request."""

    status, reason = 413, "too_large"

    @classmethod
    def body(cls, max_bytes: int, declared: int | None = None) -> PayloadTooLarge:
        """A request body over the limit: as its Content-Length says, or as it was read."""
        if declared is None:
            return cls(f"request body exceeds {max_bytes} bytes")
        return cls(f"request body of {declared} bytes exceeds {max_bytes} bytes")


class UriTooLong(ServiceError):
    status, reason = 414, "too_large"


class HeadersTooLarge(ServiceError):
    """Too many header fields, or too many bytes in the request line and headers."""

    status, reason = 431, "too_large"


class ClientTooSlow(ServiceError):
    """The client did not send its request's headers, or its body, in time."""

    status, reason = 408, "client_timeout"


class UnsupportedMediaType(ServiceError):
    status, reason = 415, "unsupported_media_type"


class Unprocessable(ServiceError):
    """Well-formed, but the wrong shape, dtype or values for the model."""

    status, reason = 422, "invalid_input"


class Unavailable(ServiceError):
    """Not ready yet, draining, or overloaded: come back later."""

    status, reason = 503, "unavailable"

    def __init__(self, message: str, reason: str = "unavailable", retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.headers = {"Retry-After": str(retry_after_s)}


class QueueTimeout(ServiceError):
    status, reason = 504, "timeout"


class StartupError(RuntimeError):
    """The server refuses to start; the message is the one-line reason shown to the operator."""
