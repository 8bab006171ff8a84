"""Prometheus metrics, on a registry of the app's own (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
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
        self.busy = Gauge("kubediffusers_busy", "1 while the worker runs a request", registry=self.registry)
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
        self.registry.register(_GpuMemoryCollector())
        self.task = task

    def render(self) -> bytes:
        return generate_latest(self.registry)
