"""The lifecycle every backend shares: `async with` closes it, `close()` is idempotent,
and a request to a closed backend is refused with a clear error."""

from __future__ import annotations

from typing import Self

from ttsearch.errors import BackendError

__all__ = ["Closeable"]


class Closeable:
    """Subclasses implement `_close()` (release what they hold, once)."""

    _closed: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Release the backend (engines stop; connections close, servers keep running)."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def _close(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{type(self).__name__} is closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
