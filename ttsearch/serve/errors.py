"""The errors the HTTP layer turns into OpenAI-shaped error responses.

Each carries the HTTP status, the OpenAI error `type` and `code`, and the request field it
is about (`param`), so a client sees which part of its request to change. Raised by the
request parser, the model catalog and the service; never by the engines (their failures
stay `SearchError` and become a 500 that names the engine, not a traceback).
"""

from __future__ import annotations

from typing import Any

from ttsearch.errors import SearchError

__all__ = ["ApiError", "Overloaded", "as_api_error", "is_unexpected"]


class ApiError(Exception):
    """A request the server refuses, with what the client should know to fix it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error object: `{"error": {message, type, param, code}}`."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class Overloaded(ApiError):
    """The queue is full: 429, with `Retry-After` (whole seconds) as the API's clients expect."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(
            message,
            status=429,
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


def is_unexpected(error: BaseException) -> bool:
    """Neither a refusal nor an engine failure: a bug, whose details belong in the log only."""
    return not isinstance(error, ApiError | SearchError)


def as_api_error(error: BaseException) -> ApiError:
    """The error a client sees for a failed search: a refusal as it is, an engine failure
    as a 500 naming it, anything else as a 500 naming only the exception's type."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, SearchError):
        return ApiError(f"the search failed: {error}", status=500, type="server_error", code="engine_failed")
    return ApiError(
        f"internal error ({type(error).__name__}); the server's log has the details",
        status=500,
        type="server_error",
    )
