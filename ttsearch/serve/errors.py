"""The errors the HTTP layer turns into OpenAI-shaped error responses.

Each carries the HTTP status, the OpenAI error `type` and `code`, and the request field it
is about (`param`), so a client sees which part of its request to change. Raised by the
request parser, the model catalog and the service; never by the engines (their failures
stay `SearchError` and become a 500 that names the engine, not a traceback).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "Overloaded"]


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
