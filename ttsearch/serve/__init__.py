"""`ttsearch serve`: an OpenAI-compatible endpoint with test-time search behind it.

`SearchService` (service.py) owns one `Searcher` on engines started once and searches every
request's problem on it, so concurrent requests share the engines' batches; `create_app`
(app.py) is the thin FastAPI layer over it. The rest: request parsing (protocol.py), model
names (catalog.py), backpressure (admission.py), engine metering (metering.py), Prometheus
metrics (metrics.py), response bodies (responses.py, selection.py), API errors (errors.py),
and the live search view: requests' search trees (trees.py) and its page (page.py).
"""

from ttsearch.serve.app import create_app
from ttsearch.serve.catalog import ModelCatalog, ServedModel
from ttsearch.serve.errors import ApiError, Overloaded
from ttsearch.serve.protocol import SearchRequest, parse_request
from ttsearch.serve.service import SearchService, ServiceOptions

__all__ = [
    "SearchService",
    "ServiceOptions",
    "create_app",
    "ModelCatalog",
    "ServedModel",
    "SearchRequest",
    "parse_request",
    "ApiError",
    "Overloaded",
]
