"""Start several engines side by side without leaking the ones that did start."""

from __future__ import annotations

import asyncio
from typing import Any, Callable


async def start_together(*factories: Callable[[], Any]) -> list[Any]:
    """Run blocking engine constructors in threads, concurrently (vLLM start-up is slow).

    If any fails, the backends that did start are closed and the first error is raised,
    so a failed start never leaves an engine holding memory.
    """
    results = await asyncio.gather(*(asyncio.to_thread(f) for f in factories), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for backend in results:
            if not isinstance(backend, BaseException):
                await backend.close()
        raise errors[0]
    return list(results)
