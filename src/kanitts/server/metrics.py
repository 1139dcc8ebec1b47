"""Prometheus metrics at ``/metrics``, one ``CollectorRegistry`` per app.

``install_metrics(app, svc)`` adds an ASGI middleware counting HTTP requests by route
template / method / status / audio format, a request observer (``app.state.observers``)
feeding the speech histograms and counters, a collector reading live state at scrape
time (active streams, queue depth, engine stats, GPU memory, rejections) and the route.
No global default registry: several apps in one process never clash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import Match

from kanitts.audio import FORMATS, content_type
from kanitts.server.asgi import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

TTFA_BUCKETS = (0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Response Content-Type -> the ``format`` label: each audio format's own type, a few
#: aliases a proxy may rewrite to, and SSE.
_CT_FORMAT = {content_type(fmt): fmt for fmt in FORMATS} | {
    "audio/x-wav": "wav", "audio/l16": "pcm", "audio/opus": "opus", "text/event-stream": "sse",
}  # fmt: skip


def _format_of(content_type: str) -> str:
    ct = content_type.split(";")[0].strip().lower()
    if ct in _CT_FORMAT:
        return _CT_FORMAT[ct]
    return "audio" if ct.startswith("audio/") else ""


class KanittsMetrics:
    """The app's registry and the metrics updated on events (the rest is read at scrape)."""

    def __init__(self, app: Any, svc: Any) -> None:
        self.app = app
        self.svc = svc
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kanitts_http_requests", "HTTP requests by route template, method, status and audio format",
            ["route", "method", "status", "format"], registry=r,
        )
        self.latency = Histogram(
            "kanitts_http_request_duration_seconds", "Time from request to the end of the response body",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.speech = Counter(
            "kanitts_speech_requests", "Finished speech syntheses by outcome (ok, error, cancelled)",
            ["status", "format", "stream", "language"], registry=r,
        )
        self.ttfa = Histogram(
            "kanitts_time_to_first_audio_seconds",
            "Arrival to first audio byte (streams) or to the complete response (non-streaming)",
            ["stream"], buckets=TTFA_BUCKETS, registry=r,
        )
        self.rtf = Histogram(
            "kanitts_synthesis_rtf", "Real-time factor: wall time / audio duration (lower is faster)",
            buckets=RTF_BUCKETS, registry=r,
        )
        self.audio_seconds = Counter("kanitts_audio_seconds", "Seconds of audio produced", ["language"], registry=r)
        self.tokens = Counter("kanitts_generated_tokens", "Tokens generated for speech requests", ["language"],
                              registry=r)
        self.chars = Counter("kanitts_input_characters", "Input characters of speech requests", registry=r)
        r.register(_StateCollector(app, svc))
        try:
            ProcessCollector(namespace="", registry=r)  # process_resident_memory_bytes, cpu, fds
        except Exception:  # noqa: BLE001 - platform without /proc
            logger.debug("process collector unavailable", exc_info=True)

    def observe(self, rec: dict[str, Any]) -> None:
        lang = str(rec.get("language") or "")
        stream = str(rec.get("stream") or "none")
        self.speech.labels(str(rec.get("status")), str(rec.get("format") or ""), stream, lang).inc()
        if rec.get("ttfa_ms") is not None:
            self.ttfa.labels(stream).observe(float(rec["ttfa_ms"]) / 1000.0)
        if rec.get("rtf") is not None and rec.get("status") == "ok":
            self.rtf.observe(float(rec["rtf"]))
        if rec.get("audio_seconds"):
            self.audio_seconds.labels(lang).inc(float(rec["audio_seconds"]))
        if rec.get("tokens"):
            self.tokens.labels(lang).inc(int(rec["tokens"]))
        if rec.get("chars"):
            self.chars.inc(int(rec["chars"]))

    def route_label(self, scope: Scope) -> str:
        """The matched route's template (bounded cardinality); ``other`` for unknown paths."""
        return _route_template(getattr(self.app, "routes", ()), scope) or "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_template(routes: Iterable[Any], scope: Scope) -> str | None:
    """The path template of the first route matching ``scope``, looking into included
    routers (FastAPI >= 0.165 keeps ``include_router`` routers as one entry whose routes
    are on ``original_router``; older versions copy the routes in)."""
    for r in routes:
        try:
            match, _ = r.matches(scope)
        except Exception:  # noqa: BLE001
            continue
        if match == Match.NONE:
            continue
        path = getattr(r, "path", None)
        if isinstance(path, str):
            return path
        inner = getattr(getattr(r, "original_router", None), "routes", None)
        if inner is not None:
            found = _route_template(inner, scope)
            if found is not None:
                return found
        return None
    return None


class _StateCollector(Collector):
    """Live gauges read at scrape time."""

    def __init__(self, app: Any, svc: Any) -> None:
        self.app = app
        self.svc = svc

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        st = self.app.state
        g = GaugeMetricFamily
        yield g("kanitts_ready", "1 when every model is loaded", value=1.0 if getattr(self.svc, "ready", False) else 0.0)
        yield g("kanitts_active_streams", "Response streams in progress", value=getattr(st, "active_streams", 0))
        adm = getattr(st, "admission", None)
        if adm is not None:
            yield g("kanitts_queue_depth", "Syntheses waiting for a slot", value=adm.waiting)
            yield g("kanitts_running_syntheses", "Syntheses holding a slot", value=adm.running)
            yield g("kanitts_max_concurrent", "Configured synthesis slots", value=adm.max_concurrent)
        rejected = CounterMetricFamily("kanitts_rejected_requests", "Requests refused by the security layer",
                                       labels=["reason"])
        for reason, n in sorted(getattr(st, "security_stats", {}).items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield from self._engine()
        yield from _gpu_memory()

    def _engine(self) -> Iterable[Metric]:
        models = getattr(self.svc, "models", {}) or {}
        labels = ["language", "model", "backend"]
        active = GaugeMetricFamily("kanitts_engine_active_requests", "Requests inside the engine", labels=labels)
        tokens = CounterMetricFamily("kanitts_engine_tokens_generated", "Tokens the engine generated", labels=labels)
        finished = CounterMetricFamily("kanitts_engine_requests_finished", "Engine requests finished", labels=labels)
        aborted = CounterMetricFamily("kanitts_engine_requests_aborted", "Engine requests aborted", labels=labels)
        kv = GaugeMetricFamily("kanitts_engine_kv_cache_usage_ratio", "KV-cache blocks in use (0-1)", labels=labels)
        for code, m in models.items():
            backend = getattr(m, "backend", None)
            stats = getattr(backend, "stats", None)
            if stats is None:
                continue
            lv = [str(code), str(getattr(m, "model_id", "")), str(getattr(backend, "name", ""))]
            active.add_metric(lv, float(getattr(stats, "active_requests", 0)))
            tokens.add_metric(lv, float(getattr(stats, "tokens_generated", 0)))
            finished.add_metric(lv, float(getattr(stats, "requests_finished", 0)))
            aborted.add_metric(lv, float(getattr(stats, "requests_aborted", 0)))
            usage = getattr(stats, "kv_cache_usage", None)
            if usage is not None:
                kv.add_metric(lv, float(usage))
        yield from (active, tokens, finished, aborted)
        if kv.samples:
            yield kv


def _gpu_memory() -> Iterable[Metric]:
    """This process's CUDA allocator and the device's used memory; absent without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        alloc = GaugeMetricFamily("kanitts_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated",
                                  labels=["device"])
        reserved = GaugeMetricFamily("kanitts_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved",
                                     labels=["device"])
        used = GaugeMetricFamily("kanitts_gpu_memory_used_bytes",
                                 "Device memory in use by all processes (total - free)", labels=["device"])
        total = GaugeMetricFamily("kanitts_gpu_memory_total_bytes", "Device memory", labels=["device"])
        for i in range(torch.cuda.device_count()):
            d = [str(i)]
            alloc.add_metric(d, float(torch.cuda.memory_allocated(i)))
            reserved.add_metric(d, float(torch.cuda.memory_reserved(i)))
            free, tot = torch.cuda.mem_get_info(i)
            used.add_metric(d, float(tot - free))
            total.add_metric(d, float(tot))
        yield from (alloc, reserved, used, total)
    except Exception:  # noqa: BLE001 - metrics never fail a scrape
        logger.debug("gpu memory metrics unavailable", exc_info=True)


class MetricsMiddleware:
    """Counts every HTTP request (after routing) and its duration to the end of the body."""

    def __init__(self, app: ASGIApp, metrics: KanittsMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import time

        t0 = time.perf_counter()
        route = self.metrics.route_label(dict(scope))  # before routing mutates the scope
        status = 500
        fmt = ""

        async def wrapped(message: Message) -> None:
            nonlocal status, fmt
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", []):
                    if k.lower() == b"content-type":
                        fmt = _format_of(v.decode("latin-1"))
                        break
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            try:
                method = scope.get("method", "")
                self.metrics.requests.labels(route, method, str(status), fmt).inc()
                self.metrics.latency.labels(route, method).observe(time.perf_counter() - t0)
            except Exception:  # noqa: BLE001
                logger.debug("metrics update failed", exc_info=True)


def install_metrics(app: Any, svc: Any = None) -> KanittsMetrics:
    """Registry, middleware, request observer and ``GET /metrics`` for ``app``."""
    from starlette.responses import Response

    svc = svc if svc is not None else getattr(app.state, "service", None)
    metrics = KanittsMetrics(app, svc)
    app.state.metrics = metrics
    observers = getattr(app.state, "observers", None)
    if observers is None:
        observers = app.state.observers = []
    observers.append(metrics.observe)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics_route, methods=["GET"], include_in_schema=False)
    return metrics
