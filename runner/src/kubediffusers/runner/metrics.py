"""Prometheus metrics, on a registry of the app's own (tests build many apps).

The load signals an autoscaler needs (docs/scaling.md) are read from the worker at
scrape time, so they are exact when scraped and cost nothing between scrapes:

- ``kubediffusers_queue_depth``: requests waiting (what ``spec.autoscaling.targetQueueDepth`` divides);
- ``kubediffusers_in_flight``: requests in the pipeline call now running (a batch may hold several);
- ``kubediffusers_busy_seconds_total``: seconds spent in pipeline calls; ``rate()`` of it is the busy fraction;
- ``kubediffusers_queued_work_seconds``: an estimate of the seconds needed to finish what is queued and running.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _GpuMemoryCollector(Collector):
    """Reads CUDA memory at scrape time, so it costs nothing between scrapes."""

    def collect(self):
        import torch

        if not torch.cuda.is_available():
            return
        allocated = GaugeMetricFamily("kubediffusers_gpu_memory_allocated_bytes", "GPU memory held by tensors", labels=["device"])
        reserved = GaugeMetricFamily("kubediffusers_gpu_memory_reserved_bytes", "GPU memory reserved by the caching allocator", labels=["device"])
        peak = GaugeMetricFamily("kubediffusers_gpu_memory_peak_bytes", "Peak GPU memory held by tensors", labels=["device"])
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            allocated.add_metric([device], torch.cuda.memory_allocated(index))
            reserved.add_metric([device], torch.cuda.memory_reserved(index))
            peak.add_metric([device], torch.cuda.max_memory_allocated(index))
        yield allocated
        yield reserved
        yield peak


class _RunningJob(Protocol):
    step: int
    total_steps: int


class WorkerView(Protocol):
    """What the load collector reads from the inference worker."""

    @property
    def depth(self) -> int: ...

    @property
    def running(self) -> Sequence[_RunningJob]: ...

    @property
    def max_batch_size(self) -> int: ...

    @property
    def average_call_seconds(self) -> float: ...


class BusyClock:
    """``kubediffusers_busy`` plus the running total of busy seconds behind ``kubediffusers_busy_seconds_total``.

    The worker sets it to 1 when a pipeline call starts and to 0 when it ends (as it
    set the plain gauge before); a scrape in the middle of a call counts the call so far.
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._since: float | None = None
        self._total = 0.0

    def set(self, value: float) -> None:
        self._gauge.set(value)
        now = time.monotonic()
        with self._lock:
            if value and self._since is None:
                self._since = now
            elif not value and self._since is not None:
                self._total += now - self._since
                self._since = None

    def seconds(self) -> float:
        with self._lock:
            return self._total + (time.monotonic() - self._since if self._since is not None else 0.0)


def queued_work_seconds(worker: WorkerView) -> float:
    """Seconds to finish what is queued and running, at the current average call time.

    Queued requests need ceil(depth / max batch) calls (an upper bound on calls: batch
    mates must be compatible); the running call has its unfinished steps left.
    """
    average = worker.average_call_seconds
    remaining = 0.0
    if worker.running:
        job = worker.running[0]
        done = job.step / job.total_steps if job.total_steps else 0.0
        remaining = average * max(0.0, 1.0 - done)
    return remaining + math.ceil(worker.depth / max(1, worker.max_batch_size)) * average


class _LoadCollector(Collector):
    def __init__(self, worker: WorkerView, busy: BusyClock) -> None:
        self._worker, self._busy = worker, busy

    def collect(self):
        in_flight = GaugeMetricFamily("kubediffusers_in_flight", "Requests in the pipeline call now running")
        in_flight.add_metric([], len(self._worker.running))
        busy = CounterMetricFamily("kubediffusers_busy_seconds", "Seconds spent in pipeline calls (rate() is the busy fraction)")
        busy.add_metric([], self._busy.seconds())
        work = GaugeMetricFamily("kubediffusers_queued_work_seconds", "Estimated seconds to finish the queued and running requests")
        work.add_metric([], queued_work_seconds(self._worker))
        yield in_flight
        yield busy
        yield work


class Metrics:
    def __init__(self, task: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kubediffusers_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "kubediffusers_request_duration_seconds",
            "HTTP request latency, end to end",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "kubediffusers_queue_wait_seconds",
            "Time a request waited in the queue before inference",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "kubediffusers_inference_duration_seconds",
            "Time of the pipeline call",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge("kubediffusers_queue_depth", "Requests waiting for the worker", registry=self.registry)
        self.batch_images = Histogram(
            "kubediffusers_batch_images",
            "Images generated per pipeline call (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "kubediffusers_batch_requests",
            "Requests served per pipeline call (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.busy = BusyClock(Gauge("kubediffusers_busy", "1 while the worker runs a request", registry=self.registry))
        self.images = Counter("kubediffusers_images_generated", "Images (or video frames) generated", ["task"], registry=self.registry)
        self.rejected = Counter(
            "kubediffusers_rejected_requests",
            "Requests refused or dropped before inference",
            ["reason"],
            registry=self.registry,
        )
        self.model_load_seconds = Gauge("kubediffusers_model_load_seconds", "Seconds the model took to load", registry=self.registry)
        self.warmup_seconds = Gauge("kubediffusers_warmup_seconds", "Seconds the warm-up generation took", registry=self.registry)
        self.ready = Gauge("kubediffusers_ready", "1 when the model is loaded and warm", registry=self.registry)
        self.recompilations = Counter(
            "kubediffusers_recompilations",
            "torch.compile compilations after ready (a shape warm-up did not cover; each costs a request seconds to minutes)",
            registry=self.registry,
        )
        self.uncompiled_calls = Counter(
            "kubediffusers_uncompiled_calls",
            "Pipeline calls after ready that ran without their compiled graphs, eagerly instead of compiling "
            "(reason size: an image size not in compile.sizes; shape: a guard warm-up did not foresee, the call run again)",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("size", "shape"):  # exported at 0 from the start, for alerts on any increase
            self.uncompiled_calls.labels(reason=reason)
        self.registry.register(_GpuMemoryCollector())
        self.task = task

    def watch(self, worker: WorkerView) -> None:
        """Export the worker's load signals (in flight, busy seconds, queued work); called once by the worker."""
        self.registry.register(_LoadCollector(worker, self.busy))

    def render(self) -> bytes:
        return generate_latest(self.registry)
