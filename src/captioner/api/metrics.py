"""Prometheus metrics of one app, in a registry of its own (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["DROP_REASONS", "REJECTION_REASONS", "Metrics"]

# Declared up front so each series exists (at 0) before its first rejection.
REJECTION_REASONS = (
    "invalid_parameter",
    "invalid_image",
    "image_too_large",
    "upload_too_large",
    "upload_budget",
    "body_timeout",
    "queue_full",
    "not_ready",
    "deadline_exceeded",
    "not_found",
    "method_not_allowed",
    "unauthorized",
    "internal_error",
)

# Why the server cut a connection off (see captioner.api.protocol).
DROP_REASONS = ("header_timeout", "body_timeout", "connection_limit")

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    """Every metric the server exports; also the batcher's :class:`BatchObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "captioner_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "captioner_request_duration_seconds",
            "HTTP request latency, from first byte in to last byte out.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rejections = Counter(
            "captioner_rejections",
            "Requests answered with an error, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)
        self.batch_size = Histogram(
            "captioner_batch_size",
            "Requests per batched engine call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "captioner_queue_wait_seconds",
            "Time from admission (before decoding) to the request's batch starting.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.inference = Histogram(
            "captioner_inference_seconds",
            "Duration of one batched engine call (encoder + beam search).",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "captioner_queue_depth",
            "Requests admitted and not yet running (decoding or waiting for a batch).",
            registry=self.registry,
        )
        self.connections_dropped = Counter(
            "captioner_connections_dropped",
            "Connections the server closed: a request's headers or body too slow, or one "
            "connection over the cap.",
            ["reason"],
            registry=self.registry,
        )
        for reason in DROP_REASONS:
            self.connections_dropped.labels(reason=reason)
        self.open_connections = Gauge(
            "captioner_open_connections",
            "Client connections open now.",
            registry=self.registry,
        )
        self.upload_bytes_held = Gauge(
            "captioner_upload_bytes_held",
            "Request-body bytes admitted under max_pending_upload_bytes and not yet released.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "captioner_model_info",
            "1 for the model loaded, labelled with its name and the precision it runs in.",
            ["name", "precision"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "captioner_model_ready",
            "1 when the model is loaded and the server is not draining, else 0.",
            registry=self.registry,
        )

    # --- BatchObserver --------------------------------------------------------------------

    def batch_ran(self, size: int, inference_s: float) -> None:
        """Record one engine call."""
        self.batch_size.observe(size)
        self.inference.observe(inference_s)

    def queue_waited(self, wait_s: float) -> None:
        """Record one request's time in the queue."""
        self.queue_wait.observe(wait_s)

    def queue_depth_changed(self, depth: int) -> None:
        """Record the number of requests admitted and not yet running."""
        self.queue_depth.set(depth)

    def model_loaded(self, name: str, precision: str) -> None:
        """Record which model serves and in which precision (one series at 1)."""
        self.model_info.clear()
        self.model_info.labels(name=name, precision=precision).set(1)

    # --- HTTP -----------------------------------------------------------------------------

    def request_done(
        self, *, route: str, method: str, status: int, latency_s: float, reason: str | None
    ) -> None:
        """Record one finished HTTP request (and its rejection reason, for an error)."""
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.request_latency.labels(route=route).observe(latency_s)
        if reason is not None:
            self.rejections.labels(reason=reason).inc()

    def connection_dropped(self, reason: str) -> None:
        """Record one connection the server closed, and why."""
        self.connections_dropped.labels(reason=reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
