"""The pipeline, serving and batching benchmarks (on any cached text-to-image
model; the CLI builds the tiny one with --tiny)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubediffusers.runner.dev.bench.harness import (
    Request,
    RunnerProcess,
    batch_sizes,
    direct_call,
    histogram,
    load_pipeline,
    p90,
    peak_memory,
    throughput,
    timed,
)
from kubediffusers.runner.settings import RunnerSettings


def pipeline_bench(settings: RunnerSettings, request: Request, runs: int) -> None:
    """livepeer ai-runner's bench.py figures for a direct pipeline call."""
    pipeline, load_seconds = load_pipeline(settings)
    call = direct_call(pipeline, request)
    timed(call, 1)  # warm-up, not counted
    times = timed(call, runs)
    mean = statistics.mean(times)
    print(f"task: {settings.task.value}  model: {settings.model_id}  device: {settings.resolved_device()}")
    print(f"request: {request.width}x{request.height}, {request.steps} steps, batch {request.batch_size}, {runs} runs")
    print(f"pipeline load time: {load_seconds:.3f} s")
    print(f"average inference time: {mean:.4f} s")
    print(f"median inference time: {statistics.median(times):.4f} s")
    print(f"average time per output: {mean / request.batch_size:.4f} s")
    print(f"peak GPU memory: {peak_memory()}")


def serving_bench(settings: RunnerSettings, requests: list[Request], runs: int, port: int) -> None:
    """HTTP end to end against a direct call of the same request, interleaved."""
    import httpx

    pipeline, _ = load_pipeline(settings)
    runner = {"task": settings.task.value, "model_id": settings.model_id, "model_dir": settings.model_dir, "device": settings.device}
    with RunnerProcess(port, runner) as server, httpx.Client(timeout=600) as client:
        server.wait_ready(client)
        for request in requests:
            call = direct_call(pipeline, request)

            def post(seed: int, request: Request = request) -> object:
                return client.post(server.url + "/text-to-image", json=request.json(seed)).raise_for_status()

            timed(call, 1)  # warm-up of both sides, not counted
            timed(post, 1)
            direct, http = [], []
            # Interleaved, so drift in machine load hits both sides alike.
            for seed in range(runs):
                direct += timed(call, 1, seed)
                http += timed(post, 1, seed)
            d, h = statistics.median(direct), statistics.median(http)
            print(
                f"{request.width}x{request.height} {request.steps} steps batch {request.batch_size}: direct median {d * 1000:.1f} ms, "
                f"HTTP median {h * 1000:.1f} ms, p90 {p90(http) * 1000:.1f} ms, overhead ratio {h / d:.3f} ({runs} runs)"
            )


@dataclass(frozen=True)
class Batching:
    """The batching comparison: two runners, batching off and on."""

    max_batch_size: int = 16
    batch_window_ms: float = 5.0
    clients: tuple[int, ...] = (1, 4, 8, 16)
    runs: int = 10


def batching_bench(runner: Mapping[str, object], request: Request, batching: Batching, port: int, log_dir: Path | None = None) -> None:
    """Throughput over HTTP with batching off and on, side by side, at several concurrencies.

    ``runner`` holds the runner settings both processes share (model, device, optimizations).
    """
    import httpx

    on = {**runner, "max_batch_size": batching.max_batch_size, "batch_window_ms": batching.batch_window_ms}
    logs = {name: log_dir / f"runner-batching-{name}.log" if log_dir else None for name in ("off", "on")}
    with (
        RunnerProcess(port, runner, logs["off"]) as off_server,
        RunnerProcess(port + 1, on, logs["on"]) as on_server,
        httpx.Client(timeout=600) as client,
    ):
        off_server.wait_ready(client, timeout=1800)
        on_server.wait_ready(client, timeout=1800)
        print(
            f"request: {request.width}x{request.height}, {request.steps} steps, guidance {request.guidance_scale:g}; batching on = max "
            f"{batching.max_batch_size} images, window {batching.batch_window_ms:g} ms"
        )
        for clients in batching.clients:
            total = max(batching.runs, clients * 4)
            off_rate = throughput(off_server.url, request, clients, total)
            before = histogram(client, on_server.url, "kubediffusers_batch_images")
            on_rate = throughput(on_server.url, request, clients, total)
            sizes = batch_sizes(before, histogram(client, on_server.url, "kubediffusers_batch_images"))
            print(
                f"{clients:>3} clients: off {off_rate:7.2f} img/s, on {on_rate:7.2f} img/s, gain {on_rate / off_rate:.2f}x ({total} requests each); "
                f"batch sizes on (calls per images bucket): {sizes}"
            )
