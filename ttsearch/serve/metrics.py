"""The server's Prometheus metrics (`GET /metrics`, text format), in a registry of its own.

A registry per service (not prometheus-client's global one) so that a process holding
several services, e.g. a test, counts each apart. Live values (queue length, problems in
flight, engine calls in flight) are read when scraped, from the objects that hold them.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ttsearch.core.scheduler import Usage
from ttsearch.serve.metering import EngineLoad, SearchProgress

__all__ = ["CONTENT_TYPE", "ServeMetrics"]

# Seconds: a toy search takes tenths, a real one at N=256 minutes.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class ServeMetrics:
    """Counters the service updates, and gauges read from live state when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ttsearch_requests",
            "HTTP requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.cancelled = Counter(
            "ttsearch_searches_cancelled", "Searches cancelled because their client went away", registry=r
        )
        self.generated_tokens = Counter("ttsearch_generated_tokens", "Tokens the policy generated", registry=r)
        self.policy_prompt_tokens = Counter(
            "ttsearch_policy_prompt_tokens",
            "Prompt tokens of policy requests (mostly read from the engine's prefix cache)",
            registry=r,
        )
        self.prm_tokens = Counter(
            "ttsearch_prm_tokens",
            "PRM input tokens, computed by the PRM or read from its prefix cache / score memo",
            ["kind"],
            registry=r,
        )
        self.request_latency = Histogram(
            "ttsearch_request_latency_seconds",
            "Time from a search request's arrival to its answer, queueing included",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "ttsearch_queue_wait_seconds",
            "Time a request waited for a search slot",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.search_seconds = Histogram(
            "ttsearch_search_seconds",
            "Time a problem's search took once admitted",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def watch(
        self,
        *,
        queue_length: Callable[[], float],
        problems_in_flight: Callable[[], float],
        peak_problems_in_flight: Callable[[], float],
        engines: dict[str, EngineLoad],
    ) -> None:
        """Gauges read from the service's live state at each scrape."""
        r = self.registry
        Gauge("ttsearch_queue_length", "Requests waiting for a search slot", registry=r).set_function(queue_length)
        Gauge("ttsearch_problems_in_flight", "Problems searching now", registry=r).set_function(problems_in_flight)
        Gauge(
            "ttsearch_problems_in_flight_peak", "Most problems searching at once since start", registry=r
        ).set_function(peak_problems_in_flight)
        calls = Gauge("ttsearch_engine_requests_in_flight", "Engine calls in flight", ["engine"], registry=r)
        sharing = Gauge(
            "ttsearch_engine_problems_in_flight",
            "Distinct problems with a call in flight on the engine",
            ["engine"],
            registry=r,
        )
        sharing_peak = Gauge(
            "ttsearch_engine_problems_in_flight_peak",
            "Most distinct problems with calls in flight on the engine at once: > 1 means requests shared its batches",
            ["engine"],
            registry=r,
        )
        for name, load in engines.items():
            calls.labels(name).set_function(_reader(load, "requests"))
            sharing.labels(name).set_function(_reader(load, "problems"))
            sharing_peak.labels(name).set_function(_reader(load, "peak_problems"))

    def spent(self, usage: Usage) -> None:
        """Add a finished (or failed) search's compute."""
        self.generated_tokens.inc(usage.generated_tokens)
        self.policy_prompt_tokens.inc(usage.prompt_tokens)
        self.prm_tokens.labels("computed").inc(usage.verifier_computed_tokens)
        self.prm_tokens.labels("cached").inc(usage.verifier_cached_tokens)

    def spent_before_cancel(self, progress: SearchProgress) -> None:
        """Add what a cancelled search had spent (its `Usage` is lost with it): the calls
        that finished before the cancellation, as its progress counted them."""
        self.generated_tokens.inc(progress.generated_tokens)
        self.prm_tokens.labels("computed").inc(progress.prm_tokens - progress.prm_cached_tokens)
        self.prm_tokens.labels("cached").inc(progress.prm_cached_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _reader(load: EngineLoad, attribute: str) -> Callable[[], float]:
    """A gauge's function reading `load.<attribute>` at scrape time."""

    def read() -> float:
        return float(getattr(load, attribute))

    return read
