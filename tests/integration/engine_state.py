"""What the integration tests read off a running vLLM engine, on every vLLM version we support."""

from __future__ import annotations

from typing import Any


def unfinished_requests(engine: Any) -> int:
    """Requests the engine's front end still tracks (`AsyncLLM.get_num_unfinished_requests`
    exists from vLLM 0.32; 0.26 has it on the output processor only)."""
    count = getattr(engine, "get_num_unfinished_requests", None)
    if count is None:
        count = engine.output_processor.get_num_unfinished_requests
    return int(count())
