"""The operator's Prometheus metrics, on an endpoint of its own (KUBEDIFFUSERS_OPERATOR_METRICS_PORT).

Reconciliations by outcome, their errors by kind, their duration, and the pipelines
this operator serves by phase. A registry of its own (tests start several operators
in one process) with the process collector, served by prometheus_client's threaded
HTTP server, so a slow scrape never holds up kopf's event loop.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from .spec import Phase

Key = tuple[str, str]
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.reconciliations = Counter(
            "kubediffusers_operator_reconciliations",
            "Reconciliations of pipelines, by result (ok, error)",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "kubediffusers_operator_reconcile_errors",
            "Failed reconciliations, by kind: api (the Kubernetes API failed; retried) or internal (a bug; retried)",
            ["kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kubediffusers_operator_reconcile_duration_seconds",
            "Time of one reconciliation",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.pipelines = Gauge("kubediffusers_operator_pipelines", "Pipelines this operator serves, by phase", ["phase"], registry=self.registry)
        for phase in Phase:
            self.pipelines.labels(phase.value).set(0)
        for result in ("ok", "error"):
            self.reconciliations.labels(result)
        for kind in ("api", "internal"):
            self.errors.labels(kind)
        self._phases: dict[Key, str] = {}
        self._lock = threading.Lock()
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def reconciled(self, seconds: float) -> None:
        self.reconciliations.labels("ok").inc()
        self.duration.observe(seconds)

    def failed(self, kind: str, seconds: float) -> None:
        self.reconciliations.labels("error").inc()
        self.errors.labels(kind).inc()
        self.duration.observe(seconds)

    def phase(self, key: Key, phase: str | None) -> None:
        """The pipeline's phase now; None forgets it (deleted, or no longer served here)."""
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = {p.value: 0 for p in Phase}
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
            for value, count in counts.items():
                self.pipelines.labels(value).set(count)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the /metrics endpoint (any path answers); returns the bound port (0 picks a free one)."""
        if self._server is None:
            self._server = start_http_server(port, addr=addr, registry=self.registry)
        return int(self._server[0].server_port)

    def close(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
