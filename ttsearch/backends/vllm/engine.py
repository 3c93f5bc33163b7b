"""Engine plumbing shared by the vLLM backends (`VLLMPolicy`, `VLLMVerifier`).

`start_engine()` starts an `AsyncLLM` from keyword settings; `VLLMBackend` is the base both
backends build on: it holds the engine and the HF tokenizer, names requests, runs one
request to its final output (engine failures become `BackendError`; on cancellation the
request is aborted) and owns the lifecycle (`close()`, `async with`, "... is closed").
The backends add only what they send and how they read the outputs.

Data parallelism: an engine started with `data_parallel_size` > 1 runs that many ranks
(engine-core processes, each with its own KV and prefix cache) behind one `AsyncLLM`,
which balances each request by itself. A problem's requests would then land on
different ranks and miss the cache, so `VLLMBackend` routes them (`RankAffinity`: a new
problem to the least-loaded rank, its later requests to the same one) by passing
`data_parallel_rank=` to `generate` / `encode`, where this vLLM's method takes it.
Facts from vLLM's source (0.26 and 0.32 alike): `AsyncLLM.generate(...,
data_parallel_rank=None)` (0.32 async_llm.py:712, 0.26 :538) is passed to the engine-core
client, whose internal load balancer sends a request with a rank to that rank
(`DPLBAsyncMPClient.get_core_engine_for_request`, 0.32 core_client.py:1648, 0.26 :1415);
the ranks a client may name are `data_parallel_size`, or `data_parallel_size_local` with
an external / hybrid load balancer (`InputProcessor`, 0.32 input_processor.py:392-396,
0.26 :258-263). `AsyncLLM.encode` takes no `data_parallel_rank` in either version (0.32
async_llm.py:994, 0.26 :803): pooling requests stay balanced by vLLM there.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Hashable
from typing import Any, ClassVar, Literal, Self

from ttsearch.backends.affinity import RankAffinity
from ttsearch.backends.lifecycle import Closeable
from ttsearch.backends.vllm.env import configure_vllm_env, shutdown_engine
from ttsearch.errors import BackendError

__all__ = [
    "VLLMBackend",
    "data_parallel_ranks",
    "data_parallel_setting",
    "engine_tokenizer",
    "prepare_vllm",
    "start_engine",
]

# transformers' lazy module is not thread-safe on first import, and engines are often
# started from threads (asyncio.to_thread) side by side.
_IMPORT_LOCK = threading.Lock()


def prepare_vllm() -> None:
    """Set vLLM's environment (`configure_vllm_env`) and import transformers' tokenizers and
    vLLM's engine modules, one thread at a time. Call it before anything imports vLLM."""
    configure_vllm_env()
    with _IMPORT_LOCK:
        import transformers  # noqa: F401
        import vllm.engine.arg_utils
        import vllm.v1.engine.async_llm  # noqa: F401


def start_engine(
    model: str | os.PathLike[str],
    *,
    description: str | None = None,
    engine_options: dict[str, Any] | None = None,
    **settings: Any,
) -> Any:
    """Start a vLLM `AsyncLLM` for `model` (blocking). `AsyncEngineArgs` get `model`, the
    `settings` that are not None, stats logging off, then `engine_options` as they are.

    Raises `BackendError` (naming `description`, default the model) when vLLM fails to start.
    """
    prepare_vllm()
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    options: dict[str, Any] = {"model": str(model), "disable_log_stats": True}
    options.update((key, value) for key, value in settings.items() if value is not None)
    options.update(engine_options or {})
    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**options))
    except Exception as e:
        raise BackendError(f"could not start a vLLM engine for {description or model}: {e}") from e


def data_parallel_setting(size: int) -> int | None:
    """`data_parallel_size` for `start_engine`: None for 1 (vLLM's default, left unset so
    that nothing changes for one rank), else the size. Raises ValueError below 1."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"data_parallel_size must be an integer >= 1, got {size!r}")
    return size if size > 1 else None


def data_parallel_ranks(engine: Any) -> int:
    """How many data-parallel ranks a request to `engine` can be sent to: vLLM's
    `data_parallel_size`, or `data_parallel_size_local` when the engine balances over its
    local ranks only (external / hybrid load balancing), as vLLM checks
    `data_parallel_rank`. 1 when the engine has one rank or does not say."""
    parallel = getattr(getattr(engine, "vllm_config", None), "parallel_config", None)
    size = getattr(parallel, "data_parallel_size", 1)
    if getattr(parallel, "data_parallel_external_lb", False) is True or (
        getattr(parallel, "data_parallel_hybrid_lb", False) is True
    ):
        size = getattr(parallel, "data_parallel_size_local", 1)
    return size if isinstance(size, int) and size > 1 else 1


def _takes_rank(method: Any) -> bool:
    """Whether `method` accepts a `data_parallel_rank` keyword."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (p.name == "data_parallel_rank" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for p in parameters
    )


def engine_tokenizer(engine: Any) -> Any:
    """The engine's HF tokenizer (vLLM >= 0.11 exposes it as `engine.tokenizer`), else one
    loaded from the engine's tokenizer path."""
    tokenizer = getattr(engine, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode"):
        return tokenizer
    from transformers import AutoTokenizer

    config = engine.model_config
    return AutoTokenizer.from_pretrained(
        config.tokenizer, trust_remote_code=getattr(config, "trust_remote_code", False)
    )


class VLLMBackend(Closeable):
    """What a backend on a vLLM v1 `AsyncLLM` needs besides its own requests.

    Subclasses set `_request_tag` (request ids are "ttsearch-{tag}-{8 hex}-{counter}"), call
    `_check_open()` before sending, and run each request with `_run()`, naming its problem
    (the key that keeps a problem on one data-parallel rank).
    """

    _request_tag: ClassVar[str] = "backend"

    def __init__(self, engine: Any, tokenizer: Any = None, *, owns_engine: bool = False) -> None:
        """`engine`: a vLLM v1 `AsyncLLM`; `tokenizer`: its HF tokenizer (default: the
        engine's own); `owns_engine`: shut the engine down on `close()`."""
        self._engine = engine
        self._tokenizer = tokenizer if tokenizer is not None else engine_tokenizer(engine)
        self._owns_engine = owns_engine
        self._max_model_len = int(engine.model_config.max_model_len)
        self._request_prefix = f"ttsearch-{self._request_tag}-{uuid.uuid4().hex[:8]}"
        self._request_counter = itertools.count()
        self._closed = False
        ranks = data_parallel_ranks(engine)
        self._affinity = RankAffinity(ranks) if ranks > 1 else None
        # The engine methods that take a rank (both versions' `generate`; no `encode` yet).
        self._routed_methods = frozenset(
            name
            for name in ("generate", "encode")
            if self._affinity is not None and _takes_rank(getattr(engine, name, None))
        )

    @classmethod
    def _owning(cls, engine: Any, tokenizer: Any = None, **kwargs: Any) -> Self:
        """`cls(engine, tokenizer, owns_engine=True, **kwargs)` for an engine just started;
        the engine is shut down if that raises."""
        try:
            return cls(engine, tokenizer, owns_engine=True, **kwargs)
        except BaseException:
            shutdown_engine(engine)
            raise

    @property
    def engine(self) -> Any:
        """The underlying `AsyncLLM` (for metrics and tests)."""
        return self._engine

    @property
    def tokenizer(self) -> Any:
        """The HF tokenizer inputs are encoded with (decode outputs with it)."""
        return self._tokenizer

    @property
    def max_model_len(self) -> int:
        """Longest input (+ generation) the engine accepts, in tokens."""
        return self._max_model_len

    @property
    def kv_cache_tokens(self) -> int | None:
        """Tokens the engine's KV cache holds (blocks x block size, as the engine core
        reported them at start-up), or None where this vLLM does not say."""
        cache = getattr(getattr(self._engine, "vllm_config", None), "cache_config", None)
        blocks, size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
        if isinstance(blocks, int) and isinstance(size, int) and blocks > 0:
            return blocks * size
        return None

    @property
    def data_parallel_ranks(self) -> int:
        """The engine's data-parallel ranks (1: none to route between)."""
        return 1 if self._affinity is None else self._affinity.ranks

    @property
    def rank_affinity(self) -> RankAffinity | None:
        """Which rank each problem's requests go to (None with one rank)."""
        return self._affinity

    def routes(self, method: Literal["generate", "encode"]) -> bool:
        """Whether requests through the engine's `method` are sent to their problem's rank."""
        return method in self._routed_methods

    # -- requests --------------------------------------------------------------------

    def _next_request_id(self) -> str:
        return f"{self._request_prefix}-{next(self._request_counter)}"

    async def _run(
        self,
        stream: Callable[..., AsyncGenerator[Any, None]],
        request_id: str,
        *,
        problem: Hashable | None = None,
        via: Literal["generate", "encode"] = "generate",
    ) -> Any:
        """Run one vLLM request to its final output. `stream(**route)` starts it: the
        engine's `via` method (`generate` or `encode`) for `request_id`, outputs of kind
        FINAL_ONLY, `route` passed on as keywords. `route` is `{"data_parallel_rank": r}`,
        `problem`'s rank, when the engine has several ranks and `via` takes a rank (see
        the module); else empty. `problem` None: not a known problem, the least-loaded rank.

        Raises `BackendError` when the engine fails or the stream ends unfinished. On
        cancellation the request is aborted and CancelledError propagates.
        """
        final = None
        routing = (
            self._affinity.route(problem)
            if self._affinity is not None and via in self._routed_methods
            else contextlib.nullcontext(None)
        )
        try:
            # aclosing: if we are cancelled between items, the stream still sees
            # GeneratorExit and vLLM aborts the request (it also does on CancelledError).
            with routing as rank:
                route = {} if rank is None else {"data_parallel_rank": rank}
                async with contextlib.aclosing(stream(**route)) as outputs:
                    async for output in outputs:
                        final = output
        except asyncio.CancelledError:
            # vLLM aborts on cancellation itself; abort again in case this version does not.
            with contextlib.suppress(Exception):
                await self._engine.abort(request_id)
            raise
        except Exception as e:
            raise BackendError(_describe_failure(e, request_id)) from e
        if final is None or not getattr(final, "finished", True):
            raise BackendError(f"vLLM request {request_id} ended without a final output")
        return final

    # -- lifecycle -------------------------------------------------------------------

    async def _close(self) -> None:
        """Stop accepting requests; shut the engine down if this backend started it.

        The shutdown blocks the event loop for up to a few seconds (vLLM then kills its
        processes). It runs on the loop on purpose: from another thread, vLLM's output
        handler would see the engine die before it is cancelled and log an error, and
        vLLM's sockets (hence its ZMQ context) could not be closed right away."""
        if self._owns_engine:
            shutdown_engine(self._engine)


def _describe_failure(error: BaseException, request_id: str) -> str:
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - layout of a future vLLM
        dead = False
    else:
        dead = isinstance(error, EngineDeadError)
    if dead:
        return f"the vLLM engine died while serving request {request_id} (see its log above)"
    return f"vLLM request {request_id} failed: {type(error).__name__}: {error}"
