"""The HTTP layer of `ttsearch serve`: FastAPI routes over a `SearchService`, nothing more.

    POST /v1/chat/completions, POST /v1/completions   a search (or plain sampling); stream=true: SSE
    GET  /v1/models, /v1/models/{model}               the policy and every preset
    GET  /v1/trees/{id}, /v1/trees/{id}/events        a request's search tree; SSE as it grows
    GET  /                                             the live search view (a page over the above)
    GET  /health                                       liveness and load
    GET  /metrics                                      Prometheus text format

Every refusal is the OpenAI error object with a message naming the field; an unexpected
failure is a 500 naming the exception's type, never a traceback (that goes to the log).
A request whose client disconnects is cancelled with its engine requests; it never
touches another request's search.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ttsearch.serve.admission import Reservation
from ttsearch.serve.catalog import ServedModel
from ttsearch.serve.errors import ApiError, as_api_error, is_unexpected
from ttsearch.serve.metering import SearchProgress
from ttsearch.serve.metrics import CONTENT_TYPE
from ttsearch.serve.page import live_view_html
from ttsearch.serve.protocol import Endpoint, parse_request
from ttsearch.serve.responses import ResponseIds, completion_body, final_chunks, progress_chunk, role_chunk
from ttsearch.serve.service import PlannedSearch, SearchOutcome, SearchService
from ttsearch.serve.trees import TreeRecord

__all__ = ["CLIENT_CLOSED", "create_app"]

logger = logging.getLogger("ttsearch.serve")

CLIENT_CLOSED = 499  # the status a request whose client went away is counted under (nginx's)
_ROUTE = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
_TREES = "/v1/trees"  # the metrics' route label of both tree routes
_SSE_HEADERS = {"Cache-Control": "no-cache"}


def create_app(service: SearchService, *, api_key: str | None = None, progress_interval: float = 0.5) -> FastAPI:
    """The app serving `service` (started and closed by the caller). `api_key`: requests to
    /v1/* must send `Authorization: Bearer <api_key>`. `progress_interval`: seconds between
    a stream's progress events (and keep-alives)."""
    app = FastAPI(title="ttsearch serve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = service.metrics

    def counted(route: str, response: Response) -> Response:
        metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    def refused(route: str, error: ApiError) -> Response:
        return counted(route, JSONResponse(error.body(), status_code=error.status, headers=error.headers))

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(
                "missing or incorrect API key: send the header 'Authorization: Bearer <key>'",
                status=401,
                code="invalid_api_key",
            )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        # Unknown routes (404) and wrong methods (405) in the API's error shape too.
        message = f"{request.method} {request.url.path}: {error.detail}"
        return refused("other", ApiError(message, status=error.status_code, code="not_found"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        logger.exception("unexpected failure in %s %s", request.method, request.url.path)
        return refused("other", as_api_error(error))

    @app.get("/")
    async def live_view() -> Response:
        # The page holds no data (it fetches it with the key typed into it): open like /health.
        return HTMLResponse(live_view_html())

    @app.get("/v1/trees/{tree_id}")
    async def tree(request: Request, tree_id: str) -> Response:
        try:
            authorize(request)
            record = find_tree(tree_id)
        except ApiError as error:
            return refused(_TREES, error)
        return counted(_TREES, Response(record.snapshot_json(), media_type="application/json"))

    @app.get("/v1/trees/{tree_id}/events")
    async def tree_events(request: Request, tree_id: str) -> Response:
        try:
            authorize(request)
            record = find_tree(tree_id)
        except ApiError as error:
            return refused(_TREES, error)
        events = _tree_events(record, progress_interval)
        return counted(_TREES, StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS))

    def find_tree(tree_id: str) -> TreeRecord:
        record = service.trees.get(tree_id)
        if record is None:
            kept = service.trees.keep
            older = f"older than the {kept} finished searches it keeps" if kept else "finished (it keeps none)"
            raise ApiError(
                f"no search tree {tree_id!r}: not a request of this server, or {older} (--keep-trees)",
                status=404,
                param="tree_id",
                code="tree_not_found",
            )
        return record

    @app.get("/health")
    async def health() -> Response:
        return JSONResponse(service.health())

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        try:
            authorize(request)
        except ApiError as error:
            return refused("/v1/models", error)
        data = [_model_card(m, service.started) for m in service.catalog.models]
        return counted("/v1/models", JSONResponse({"object": "list", "data": data}))

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> Response:
        try:
            authorize(request)
            if service.catalog.is_plain_sampling(model):
                card = _model_card(service.catalog.models[0], service.started)
            else:
                strategy = service.catalog.strategy(model)  # any <strategy>-<N>, not only presets
                served = ServedModel(model, type(strategy).__name__, strategy.n, strategy.options())
                card = _model_card(served, service.started)
        except ApiError as error:
            return refused("/v1/models", error)
        return counted("/v1/models", JSONResponse(card))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, "completion")

    async def complete(request: Request, endpoint: Endpoint) -> Response:
        route = _ROUTE[endpoint]
        arrived = time.monotonic()
        try:
            authorize(request)
            plan = service.plan(parse_request(endpoint, await _json_body(request)))
            reservation = service.reserve()
        except ApiError as error:
            return refused(route, error)
        ids = ResponseIds(endpoint, plan.request.model)
        progress = SearchProgress()
        search = service.start(reservation, plan, progress, tree_id=ids.id)
        if plan.request.stream:
            events = _stream(service, route, ids, plan, search, reservation, progress, arrived, progress_interval)
            return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        gone = asyncio.create_task(_disconnected(request))
        try:
            await asyncio.wait({search, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            search.cancel()  # a no-op once it is done; cancels the search when the client left
            reservation.release()
            await asyncio.gather(search, gone, return_exceptions=True)
        if search.cancelled():  # the client went away: nobody reads this response
            return counted(route, Response(status_code=CLIENT_CLOSED))
        metrics.request_latency.labels(route).observe(time.monotonic() - arrived)
        failure = search.exception()
        if failure is not None:
            return refused(route, _as_api_error(failure))
        return counted(route, JSONResponse(completion_body(ids, search.result())))

    return app


async def _stream(
    service: SearchService,
    route: str,
    ids: ResponseIds,
    plan: PlannedSearch,
    search: asyncio.Task[SearchOutcome],
    reservation: Reservation,
    progress: SearchProgress,
    arrived: float,
    interval: float,
) -> AsyncIterator[str]:
    """The SSE events of a streamed request: the role, progress while the search runs (or a
    keep-alive comment), then the answer, `[DONE]`. If the client disconnects, Starlette
    cancels this generator and the `finally` cancels the search."""
    status = CLIENT_CLOSED
    try:
        yield _event(role_chunk(ids))
        seen = -1
        while not search.done():
            await asyncio.wait({search}, timeout=interval)
            if search.done():
                break
            if progress.version != seen:
                seen = progress.version
                yield _event(progress_chunk(ids, progress.snapshot()))
            else:
                yield ": keep-alive\n\n"
        failure = search.exception()
        if failure is None:
            for chunk in final_chunks(ids, search.result(), include_usage=plan.request.include_usage):
                yield _event(chunk)
            status = 200
        else:
            api_error = _as_api_error(failure)
            status = api_error.status
            yield _event(api_error.body())
        service.metrics.request_latency.labels(route).observe(time.monotonic() - arrived)
        yield "data: [DONE]\n\n"
    finally:
        search.cancel()
        reservation.release()
        service.metrics.requests.labels(route, str(status)).inc()


async def _tree_events(record: TreeRecord, interval: float) -> AsyncIterator[str]:
    """The SSE events of a search tree: its snapshot now and whenever it moved (polled every
    `interval` seconds; a keep-alive comment when it did not), the last one after the search
    ended, then `[DONE]`. A tree that has ended already sends one snapshot."""
    seen = None
    while True:
        ended = record.ended  # read before the snapshot: once ended, that snapshot is the last
        if record.version != seen:
            seen = record.version
            yield f"data: {record.snapshot_json()}\n\n"
        elif not ended:
            yield ": keep-alive\n\n"
        if ended:
            break
        await asyncio.sleep(interval)
    yield "data: [DONE]\n\n"


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body has been read: the next ASGI message is
    the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(f"the request body is not valid JSON: {error}") from None


def _as_api_error(error: BaseException) -> ApiError:
    if is_unexpected(error):
        logger.error("unexpected failure of a search", exc_info=error)
    return as_api_error(error)


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def _model_card(model: ServedModel, created: float) -> dict[str, Any]:
    search = (
        None if model.strategy is None else {"strategy": model.strategy, "n": model.n, "options": dict(model.options)}
    )
    return {"id": model.name, "object": "model", "created": int(created), "owned_by": "ttsearch", "search": search}
