"""`GET /metrics`: the API's own figures for Prometheus.

Requests and their latency per route template (never per raw path: tracking numbers
would make a series each), the connection pool's usage and the rate limiter's
refusals. Each application owns its registry, so several apps in one process (the
tests) do not collide. Under `parceltrack api --workers N` each worker process keeps
its own figures; with `PROMETHEUS_MULTIPROC_DIR` set (the `api` command sets it for
N > 1) the counters and histograms of all workers are summed at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # no route: one series for every unknown path
# Any token is a method in HTTP; others count as one, so clients cannot add series.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
# A lookup's goal is 5 ms at the median and 20 ms at p99: fine buckets down there.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class ApiMetrics:
    """The request counters and histograms, and what is read only when scraped."""

    def __init__(self, pool_stats: Callable[[], dict[str, int]], refusals: Callable[[], int]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "parceltrack_api_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "parceltrack_api_request_seconds",
            "Time from request to the end of the response body, by route template",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Sampled(pool_stats, refusals))
        # labels() formats and hashes its arguments on every call: keep the children.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counted = self._counted.get((route, method, status))
        if counted is None:
            counted = self._counted[route, method, status] = self.requests.labels(
                route, method, str(status)
            )
        timed = self._timed.get((route, method))
        if timed is None:
            timed = self._timed[route, method] = self.latency.labels(route, method)
        counted.inc()
        timed.observe(seconds)

    def exposition(self) -> bytes:
        """The text format of everything registered (of all workers, in multiprocess mode)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged) + generate_latest(_SampledOnly(self.registry))
        return generate_latest(self.registry)


class _Sampled(Collector):
    """Pool usage and limiter refusals, read from the live objects at scrape time."""

    def __init__(self, pool_stats: Callable[[], dict[str, int]], refusals: Callable[[], int]):
        self.pool_stats, self.refusals = pool_stats, refusals

    def collect(self) -> Iterator[Any]:
        stats = self.pool_stats()
        size = GaugeMetricFamily(
            "parceltrack_api_pool_connections", "Pool connections by state", labels=["state"]
        )
        opened = stats.get("pool_size", 0)
        idle = stats.get("pool_available", 0)
        size.add_metric(["open"], opened)
        size.add_metric(["idle"], idle)
        size.add_metric(["in_use"], max(0, opened - idle))
        size.add_metric(["max"], stats.get("pool_max", 0))
        yield size
        waiting = GaugeMetricFamily(
            "parceltrack_api_pool_waiting", "Requests waiting for a pool connection now"
        )
        waiting.add_metric([], stats.get("requests_waiting", 0))
        yield waiting
        refused = CounterMetricFamily(
            "parceltrack_api_rate_limited",
            "Public requests refused by the rate limiter (429)",
        )
        refused.add_metric([], self.refusals())
        yield refused


class _SampledOnly(Collector):
    """In multiprocess mode the merged files hold counters and histograms; the sampled
    gauges of the answering worker come from its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self.registry.collect():
            if family.name.startswith(("parceltrack_api_pool", "parceltrack_api_rate_limited")):
                yield family


class MetricsMiddleware:
    """Pure ASGI, so it adds no request object or task to the hot path."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "other"
            metrics.observe(route, method, status, time.perf_counter() - started)


async def serve_metrics(request: Request) -> Response:
    metrics: ApiMetrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
