"""What the benchmarks share: timing with device sync, peak memory, the device's
name, loading a pipeline in process, and real runner processes (start, wait for
/readyz, stop, scrape /metrics). torch and httpx are imported when used."""

from __future__ import annotations

import gc
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubediffusers.runner.settings import RunnerSettings

# Compile caches of the calling shell must not leak into a runner under test.
INDUCTOR_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE")


class BenchError(SystemExit):
    """A benchmark cannot go on; the message says why (one line, exit status 1)."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"kubediffusers-bench: {msg}")


# -- timing and memory ------------------------------------------------------------


def sync() -> None:
    """Wait for queued GPU work, so a timer measures it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> str:
    import torch

    if not torch.cuda.is_available():
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def timed(call: Callable[[int], object], runs: int, first_seed: int = 0) -> list[float]:
    """Seconds of each of ``runs`` calls (seed first_seed + i), device work included."""
    times = []
    for seed in range(first_seed, first_seed + runs):
        started = time.perf_counter()
        call(seed)
        sync()
        times.append(time.perf_counter() - started)
    return times


def warm(call: Callable[[int], object], count: int) -> float:
    """Untimed calls before timing (compilation, CUDA graphs); their seconds in all."""
    started = time.perf_counter()
    for seed in range(count):
        call(10_000 + seed)
    sync()
    return time.perf_counter() - started


def p90(times: list[float]) -> float:
    return statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]


# -- requests and pipelines ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One text-to-image request, as JSON for the route or params for a direct call."""

    prompt: str
    steps: int
    height: int
    width: int
    batch_size: int = 1
    guidance_scale: float = 7.5
    output_format: str | None = None  # None: the runner's default (png)

    def json(self, seed: int) -> dict[str, Any]:
        encoding = {"output_format": self.output_format} if self.output_format else {}
        return encoding | {
            "prompt": self.prompt,
            "guidance_scale": self.guidance_scale,
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            "num_images_per_prompt": self.batch_size,
            "seed": seed,
        }


def load_pipeline(settings: RunnerSettings, snapshot: Path | None = None) -> tuple[Any, float]:
    """The runner's own pipeline for ``settings`` (from the cache), and its load seconds."""
    from kubediffusers.runner.model import find_snapshot
    from kubediffusers.runner.pipelines import pipeline_class

    started = time.perf_counter()
    snapshot = snapshot or find_snapshot(settings)[0]
    pipeline = pipeline_class(settings.task).load(snapshot, settings)
    sync()
    return pipeline, time.perf_counter() - started


def direct_call(pipeline: Any, request: Request) -> Callable[[int], object]:
    """A call of the pipeline as the runner's worker makes it, for ``timed``."""
    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.types import Work

    def call(seed: int) -> object:
        return pipeline.run(Work(params=TextToImageParams(**request.json(seed)), seed=seed, num_images=request.batch_size))

    return call


# -- runner processes -----------------------------------------------------------------


@dataclass
class RunnerProcess:
    """A real `kubediffusers-runner` on 127.0.0.1:``port`` with ``settings`` (runner setting -> value)."""

    port: int
    settings: Mapping[str, object]
    log: Path | None = None  # stdout and stderr; None discards them
    module: str = "kubediffusers.runner.cli"  # what `python -m` runs (the bench's stub server: dev.bench.stub)
    extra_env: Mapping[str, str] = field(default_factory=dict)  # variables beyond the settings (the stub's)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in INDUCTOR_ENV and not k.startswith("KUBEDIFFUSERS_")}
        values = {"log_level": "warning", "max_queue_size": 256, **self.settings, "host": "127.0.0.1", "port": self.port}
        env.update({f"KUBEDIFFUSERS_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value) for name, value in values.items()})
        return {**env, **self.extra_env}

    def start(self) -> RunnerProcess:
        # Another process on the port would answer /readyz for this one, and its figures would be reported as ours.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle, a listener is
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as error:
                raise BenchError(f"port {self.port} is in use (another bench or gpu-check running?): {error.strerror}") from None
        # `python -m`, not the console script: `pip install --target` (hack/gpu-check.sh) installs none.
        out: Any = open(self.log, "wb") if self.log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.environment(), stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, client: Any, timeout: float = 300) -> float:
        """Seconds until /readyz answers 200; when the runner dies first, say how (and show its log's end)."""
        import httpx

        assert self.process is not None
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"the runner process exited ({self.process.returncode}) before it was ready{self._log_tail()}")
            try:
                if client.get(self.url + "/readyz").status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                raise BenchError(f"the runner did not become ready in {timeout:g} s{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        if self.log is None or not self.log.is_file():
            return ""
        tail = self.log.read_text(errors="replace").splitlines()[-15:]
        return f"; end of {self.log}:\n" + "\n".join(tail)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RunnerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric(client: Any, url: str, name: str) -> float | None:
    """One unlabelled (or first) sample of a metric from /metrics."""
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def histogram(client: Any, url: str, name: str) -> dict[str, float]:
    """The cumulative buckets (le -> count) of one histogram from /metrics."""
    buckets = {}
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    return buckets


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> str:
    """Calls per batch-size bucket between two histogram snapshots, e.g. '<=1: 3, <=16: 12'."""
    parts, below = [], 0.0
    for le, count in after.items():
        calls = count - before.get(le, 0.0) - below
        below += calls
        if calls:
            parts.append(f"<={le.replace('+Inf', 'inf').removesuffix('.0')}: {calls:g}")
    return ", ".join(parts) or "no calls"


def throughput(url: str, request: Request, clients: int, total: int) -> float:
    """Images per second with ``clients`` concurrent callers sending ``total`` requests."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def worker(first: int) -> None:
        # One keep-alive connection per client, as a real client library would hold.
        with httpx.Client(timeout=600) as client:
            for seed in range(first, total, clients):
                client.post(url + "/text-to-image", json=request.json(seed)).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return total * request.batch_size / (time.perf_counter() - started)
