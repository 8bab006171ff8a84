"""The output path's benchmarks (``kubediffusers-bench output``), on a stub pipeline.

With no model compute (``stub``: a fixed 512x512 image per prompt), what is
measured is the runner's own cost: the encoders alone; per request, HTTP end to
end minus a direct call of the same pipeline, for png (fast level), jpeg and
webp, single and batched; and, with a pipeline that sleeps like a device,
serving throughput as a share of the pipeline's own batched throughput. Ratios
come from one run, so machine load hits both sides alike. ``--profile`` samples
the serving process with py-spy and says on which threads the encoders ran.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from kubediffusers.runner.dev.bench.harness import BenchError, RunnerProcess, batch_sizes, device_name, histogram, p90
from kubediffusers.runner.dev.bench.stub import SIZE, fixed_image, stub_pipeline
from kubediffusers.runner.encoding import Encoding, jpeg
from kubediffusers.runner.settings import ImageFormat

FORMATS = (ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.WEBP)
STUB = "kubediffusers.runner.dev.bench.stub"
# What the stub runner is configured with (its pipeline ignores the model).
STUB_RUNNER = {"task": "text-to-image", "model_id": "kubediffusers/stub", "device": "cpu"}


@dataclass(frozen=True)
class OutputBench:
    runs: int = 30
    batch: int = 4  # images per request in the batched rows
    call_ms: float = 40.0  # the throughput stub's device time per call ...
    image_ms: float = 2.0  # ... and per image
    clients: int | None = None  # the throughput comparison's; None: four batches of them
    max_batch_size: int = 16
    batch_window_ms: float = 5.0
    port: int = 8785
    profile_dir: Path | None = None
    baseline: Path | None = None  # another checkout whose stub server is measured beside this one's
    rounds: int = 5  # of the throughput comparison: the pipeline alone, then serving, each round


def baseline_source(checkout: Path) -> Path:
    """The runner sources of a checkout given as ``--baseline``, or one line saying why not."""
    source = checkout / "runner" / "src"
    if not (source / "kubediffusers" / "runner" / "dev" / "bench" / "stub.py").is_file():
        raise BenchError(f"--baseline {checkout} is not a kubediffusers checkout with the output bench (no runner/src/kubediffusers/runner/dev/bench/stub.py)")
    return source.resolve()


def median_ms(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def encoder_costs(runs: int, device: str) -> None:
    """Each encoder alone on the fixed image: Pillow's PNG levels, JPEG, WebP methods, and the
    runner's JPEG, encoded from the uint8 pixels as they leave the device (encoding.jpeg)."""
    image = fixed_image()

    def save(**options: Any) -> Callable[[], int]:
        def call() -> int:
            buffer = io.BytesIO()
            image.save(buffer, **options)
            return len(buffer.getvalue())

        return call

    candidates: dict[str, Callable[[], int]] = {
        "png level 6 (Pillow default)": save(format="PNG", compress_level=6),
        "png level 1 (runner)": save(format="PNG", compress_level=1),
        "png level 0 (stored)": save(format="PNG", compress_level=0),
        "jpeg q90 (Pillow)": save(format="JPEG", quality=90),
        "jpeg q90 from pixels (runner)": partial(lambda pixels: len(jpeg(pixels, 90)), np.asarray(image)),
        "webp q90 method 0 (runner)": save(format="WEBP", quality=90, method=0),
        "webp q90 method 4 (Pillow default)": save(format="WEBP", quality=90, method=4),
    }
    print(f"encoders on one {SIZE}x{SIZE} image, one thread, {runs} runs, device {device} (CPU time: what a loaded machine does not inflate):")
    for name, call in candidates.items():
        size = call()
        cpu = []
        for _ in range(runs):
            started = time.thread_time()
            call()
            cpu.append(time.thread_time() - started)
        print(f"  {name:<36} wall median {median_ms(call, runs):7.2f} ms  CPU median {statistics.median(cpu) * 1000:7.2f} ms  {size / 1024:7.1f} KiB")


def _payload(fmt: ImageFormat, images: int, seed: int) -> dict[str, Any]:
    return {"prompt": "a lighthouse", "num_inference_steps": 1, "guidance_scale": 0, "num_images_per_prompt": images, "seed": seed, "output_format": fmt.value}


def _work(fmt: ImageFormat, images: int) -> Any:
    """The work a request of ``_payload(fmt, images, 0)`` hands the pipeline, for a direct call."""
    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.types import Work

    return Work(params=TextToImageParams(**_payload(fmt, images, 0)), seed=0, num_images=images)


def cpu_seconds(pid: int | None, thread: int | None = None) -> float:
    """User + system CPU seconds of a process, or of one of its threads, so far (Linux /proc; 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat")
        fields = stat.read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving_costs(bench: OutputBench, client: Client, device: str, pid: int | None = None, baseline: Client | None = None) -> dict[tuple[str, int], float]:
    """Per request: HTTP end to end minus a direct call (pipeline + the same encoding), interleaved;
    and the runner process's CPU time per request, which a loaded machine inflates far less than wall time,
    split into the event loop's (uvicorn runs it on the process's main thread) and the other threads'.
    With a ``baseline`` server (another checkout's), its request alternates with this one's in every run,
    first one then the other: the difference of the two medians is measured side by side."""
    pipeline = stub_pipeline()
    costs = {}
    print(f"serving cost per image (HTTP median - direct median) / images, {bench.runs} interleaved runs, device {device}:")
    for images in (1, bench.batch):
        for fmt in FORMATS:
            work = _work(fmt, images)
            direct = partial(pipeline.run_batch, [work])
            direct_encoded = partial(_run_and_encode, pipeline, work, Encoding(fmt))
            post = partial(client.post, "/text-to-image", _payload(fmt, images, 0))
            post_baseline = partial(baseline.post, "/text-to-image", _payload(fmt, images, 0)) if baseline else None
            e = [median_ms(direct_encoded, 1) for _ in range(bench.runs)]
            for one in (client, baseline):
                if one is not None:
                    one.reopen()  # the runner closes a connection left idle past its keep-alive timeout
            post()  # warm-up of the connection and the route
            if post_baseline:
                post_baseline()
            d, h, hb = [], [], []
            server_cpu = loop_cpu = 0.0
            for run in range(bench.runs):
                # Each request right after its direct call: what runs in between (here, a
                # pause) makes this machine's next request slower (idle_costs), so the pair
                # is measured alike and nothing else comes between them.
                d.append(median_ms(direct, 1))
                if post_baseline and run % 2:
                    hb.append(median_ms(post_baseline, 1))
                before, loop_before = cpu_seconds(pid), cpu_seconds(pid, pid)
                h.append(median_ms(post, 1))
                server_cpu += cpu_seconds(pid) - before
                loop_cpu += cpu_seconds(pid, pid) - loop_before
                if post_baseline and not run % 2:
                    hb.append(median_ms(post_baseline, 1))
            cost = (statistics.median(h) - statistics.median(d)) / images
            costs[(fmt.value, images)] = cost
            parts = block_costs(h, d, images)
            spread = f" (fifths of the runs: {', '.join(f'{c:.2f}' for c in parts)})" if parts else ""
            beside = (
                f"; baseline HTTP median {statistics.median(hb):6.2f} ms, this - baseline {(statistics.median(h) - statistics.median(hb)) / images:+5.2f} ms/image"
                if hb
                else ""
            )
            print(
                f"  {fmt.value:<4} batch {images}: direct {statistics.median(d):6.2f} ms, direct+encode (one thread) {statistics.median(e):6.2f} ms, "
                f"HTTP median {statistics.median(h):6.2f} ms (p90 {p90([x / 1000 for x in h]) * 1000:6.2f}), "
                f"serving cost {cost:5.2f} ms/image{spread}, runner CPU {server_cpu / bench.runs * 1000:6.2f} ms/request "
                f"(event loop {loop_cpu / bench.runs * 1000:.2f}, other threads {(server_cpu - loop_cpu) / bench.runs * 1000:.2f}){beside}"
            )
    return costs


def idle_costs(bench: OutputBench, client: Client, device: str, pauses: tuple[float, ...] = (0.0, 4.0, 10.0)) -> dict[float, float]:
    """The single-JPEG serving cost with a pause of ``pauses`` ms before each direct call and each
    request alike: how much this machine's idle cores slow the next request (a client's think time)."""
    pipeline = stub_pipeline()
    direct = partial(pipeline.run_batch, [_work(ImageFormat.JPEG, 1)])
    post = partial(client.post, "/text-to-image", _payload(ImageFormat.JPEG, 1, 0))
    costs = {}
    for pause in pauses:
        d, h = [], []
        for _ in range(bench.runs):
            time.sleep(pause / 1000)
            d.append(median_ms(direct, 1))
            time.sleep(pause / 1000)
            h.append(median_ms(post, 1))
        costs[pause] = statistics.median(h) - statistics.median(d)
    figures = ", ".join(f"{pause:g} ms: {cost:.2f}" for pause, cost in costs.items())
    print(
        f"  after idle time: jpeg batch 1 serving cost with a pause before each direct call and each request alike ({bench.runs} runs each, device {device}): {figures} ms"
    )
    return costs


def block_costs(http: list[float], direct: list[float], images: int, blocks: int = 5) -> list[float]:
    """The serving cost of each of ``blocks`` consecutive stretches of the runs: how far this
    machine's drift moves the figure within one run (none when there are too few runs)."""
    size = len(http) // blocks
    if size < 2:
        return []
    stretches = [slice(i * size, (i + 1) * size) for i in range(blocks)]
    return [(statistics.median(http[part]) - statistics.median(direct[part])) / images for part in stretches]


def _run_and_encode(pipeline: Any, work: Any, encoding: Encoding) -> None:
    (results,) = pipeline.run_batch([work])
    for item in results:
        encoding.encode(item.source)


class Client:
    """One keep-alive connection of the standard library's HTTP client.

    The clients share the two cores with the server here, and a client's own
    work is on every request's path: http.client parses a 70 KB answer in a
    fraction of httpx's time, so less of the client is counted as serving."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=600)

    def post(self, path: str, payload: dict[str, Any]) -> bytes:
        self.connection.request("POST", path, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        answer = self.connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise BenchError(f"POST {path} answered {answer.status}: {body[:200]!r}")
        return body

    def reopen(self) -> None:
        """A new connection at the next request (http.client connects when it has none)."""
        self.connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()


def throughput_ratio(bench: OutputBench, device: str) -> float:
    """Serving throughput with batching on, against the pipeline's own at its largest batch.

    The clients (by default four batches of them) keep a full batch queued while one
    runs and another is being answered: what is measured is whether serving keeps the
    pipeline busy, not how fast the clients (threads sharing the cores) turn around.
    The two are measured side by side in rounds, the pipeline alone (here, the runner
    idle) just before each round of serving: the ratio is the median of the rounds',
    as this machine's speed drifts by more than the difference measured (the pipeline
    alone moved 154-180 img/s between runs a minute apart)."""
    import httpx

    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.types import Work

    stub_env = {"STUB_CALL_MS": str(bench.call_ms), "STUB_IMAGE_MS": str(bench.image_ms)}
    pipeline = stub_pipeline()
    pipeline.pipe.call_ms, pipeline.pipe.image_ms = bench.call_ms, bench.image_ms
    work = Work(params=TextToImageParams(**_payload(ImageFormat.JPEG, 1, 0)), seed=0, num_images=bench.max_batch_size)

    def pipeline_alone() -> float:
        return bench.max_batch_size / (median_ms(lambda: pipeline.run_batch([work]), 5) / 1000)

    settings = {**STUB_RUNNER, "max_batch_size": bench.max_batch_size, "batch_window_ms": bench.batch_window_ms, "max_queue_size": 256}
    clients = bench.clients or 4 * bench.max_batch_size
    total = clients * 8  # requests per round: eight per client (a partial last call weighs less)
    own, served = [], []
    with RunnerProcess(bench.port + 1, settings, module=STUB, extra_env=stub_env) as server, httpx.Client(timeout=600) as client:
        server.wait_ready(client)

        def worker(first: int) -> None:
            with Client(server.url) as one:
                for seed in range(first, total, clients):
                    one.post("/text-to-image", _payload(ImageFormat.JPEG, 1, seed))

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, range(clients)))  # warm-up round
            before = histogram(client, server.url, "kubediffusers_batch_images")
            for _ in range(bench.rounds):
                own.append(pipeline_alone())
                started = time.perf_counter()
                list(pool.map(worker, range(clients)))
                served.append(total / (time.perf_counter() - started))
        sizes = batch_sizes(before, histogram(client, server.url, "kubediffusers_batch_images"))
    ratios = [s / o for s, o in zip(served, own, strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"throughput, stub pipeline {bench.call_ms:g} ms/call + {bench.image_ms:g} ms/image (sleeping like a device), jpeg, device {device}: "
        f"pipeline alone at batch {bench.max_batch_size} {statistics.median(own):.1f} img/s (median of {bench.rounds} rounds); served to {clients} clients "
        f"with batching (max {bench.max_batch_size}, window {bench.batch_window_ms:g} ms) {statistics.median(served):.1f} img/s: "
        f"{ratio * 100:.1f}% of the pipeline's own (median; rounds {', '.join(f'{r * 100:.0f}%' for r in ratios)}); calls by images: {sizes}"
    )
    return ratio


def profile_threads(pid: int, seconds: float, out: Path) -> Counter[str]:
    """py-spy samples of ``pid`` for ``seconds``: samples inside an image encoder, by thread name."""
    beside = Path(sys.executable).parent / "py-spy"  # installed in the same environment
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "serving-profile.txt"
    command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250", "--threads", "--format", "raw", "--output", str(raw)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not raw.is_file():
        raise BenchError(f"py-spy could not sample the runner: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    encoder: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any("encode (kubediffusers/runner/encoding.py" in f or "_save (PIL/" in f for f in frames):
            encoder[frames[0]] += int(count)
    return encoder


def run(bench: OutputBench) -> None:
    import httpx

    device = device_name("cpu")
    source = baseline_source(bench.baseline) if bench.baseline is not None else None
    encoder_costs(bench.runs, device)
    runner = RunnerProcess(bench.port, STUB_RUNNER, module=STUB)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(runner)
        probe = stack.enter_context(httpx.Client(timeout=600))
        client = stack.enter_context(Client(runner.url))
        server.wait_ready(probe)
        baseline = None
        if source is not None:
            other = stack.enter_context(RunnerProcess(bench.port + 2, STUB_RUNNER, module=STUB, extra_env={"PYTHONPATH": str(source)}))
            other.wait_ready(probe)
            baseline = stack.enter_context(Client(other.url))
            print(f"baseline: the stub server of {bench.baseline} ({source} first on its PYTHONPATH), its requests alternating with this checkout's")
        costs = serving_costs(bench, client, device, server.process.pid if server.process else None, baseline)
        idle_costs(bench, client, device)
        jpeg = max(costs[("jpeg", 1)], costs[("jpeg", bench.batch)])
        print(f"target: jpeg serving cost <= 3 ms/image at the median: {'met' if jpeg <= 3 else 'MISSED'} ({jpeg:.2f} ms, device {device})")
        if bench.profile_dir is not None:
            assert server.process is not None
            seconds = 6.0
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                sampling = pool.submit(profile_threads, server.process.pid, seconds, bench.profile_dir)
                deadline = time.monotonic() + seconds + 1
                while time.monotonic() < deadline:
                    client.post("/text-to-image", _payload(ImageFormat.JPEG, bench.batch, 0))
                encoder = sampling.result()
            total = sum(encoder.values()) or 1
            print(f"profile (py-spy, {seconds:g} s of jpeg batch {bench.batch}, device {device}): samples inside an image encoder by thread:")
            for thread, count in encoder.most_common():
                print(f"  {thread}: {count} ({count / total * 100:.0f}%)")
            inference = sum(c for t, c in encoder.items() if "inference" in t)
            print(f"  on the inference thread: {inference} samples; raw profile in {bench.profile_dir / 'serving-profile.txt'}")
    ratio = throughput_ratio(bench, device)
    print(f"target: serving keeps >= 95% of the pipeline's batched throughput: {'met' if ratio >= 0.95 else 'MISSED'} ({ratio * 100:.1f}%, device {device})")
