"""`kubediffusers-bench`: pipeline and serving benchmarks.

``pipeline`` mirrors livepeer ai-runner's bench.py: load time, average
inference time, time per output and peak GPU memory. ``serving`` measures the
HTTP path (a real `kubediffusers-runner` process) against a direct pipeline
call of the same request, interleaved in one run, and prints their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubediffusers.runner.settings import RunnerSettings, Task


@dataclass
class Request:
    prompt: str
    steps: int
    height: int
    width: int
    batch_size: int
    guidance_scale: float = 7.5

    def json(self, seed: int) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "guidance_scale": self.guidance_scale,
            "num_inference_steps": self.steps,
            "height": self.height,
            "width": self.width,
            "num_images_per_prompt": self.batch_size,
            "seed": seed,
        }


def _settings(args: argparse.Namespace) -> RunnerSettings:
    return RunnerSettings(task=args.task, model_id=args.model_id, model_dir=args.model_dir, device=args.device, warmup=False)


def _prepare_model(args: argparse.Namespace) -> None:
    if args.tiny:
        from kubediffusers.runner.tiny import ensure_tiny_model, tiny_model_id

        args.model_id = args.model_id or tiny_model_id(args.task)
        ensure_tiny_model(args.task, args.model_dir)
    if not args.model_id:
        raise SystemExit("kubediffusers-bench: --model-id is required unless --tiny is given")


def _load(settings: RunnerSettings) -> tuple[Any, float]:
    from kubediffusers.runner.model import find_snapshot
    from kubediffusers.runner.pipelines import pipeline_class

    started = time.perf_counter()
    snapshot, _ = find_snapshot(settings)
    pipeline = pipeline_class(settings.task).load(snapshot, settings)
    return pipeline, time.perf_counter() - started


def _direct(pipeline: Any, request: Request, seed: int) -> float:
    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.types import Work

    params = TextToImageParams(**{k: v for k, v in request.json(seed).items()})
    work = Work(params=params, seed=seed, num_images=request.batch_size)
    started = time.perf_counter()
    pipeline.run(work)
    _synchronize()
    return time.perf_counter() - started


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gpu_memory() -> str:
    import torch

    if not torch.cuda.is_available():
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def run_pipeline_bench(args: argparse.Namespace) -> None:
    settings = _settings(args)
    pipeline, load_seconds = _load(settings)
    request = Request(args.prompt, args.steps, args.height, args.width, args.batch_size, args.guidance_scale)
    _direct(pipeline, request, 0)  # warm-up, not counted
    times = [_direct(pipeline, request, seed) for seed in range(args.runs)]
    mean = statistics.mean(times)
    print(f"task: {settings.task.value}  model: {settings.model_id}  device: {settings.resolved_device()}")
    print(f"request: {request.width}x{request.height}, {request.steps} steps, batch {request.batch_size}, {args.runs} runs")
    print(f"pipeline load time: {load_seconds:.3f} s")
    print(f"average inference time: {mean:.4f} s")
    print(f"median inference time: {statistics.median(times):.4f} s")
    print(f"average time per output: {mean / request.batch_size:.4f} s")
    print(f"peak GPU memory: {_peak_gpu_memory()}")


def _start_server(args: argparse.Namespace, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        KUBEDIFFUSERS_TASK=args.task,
        KUBEDIFFUSERS_MODEL_ID=args.model_id,
        KUBEDIFFUSERS_MODEL_DIR=str(args.model_dir),
        KUBEDIFFUSERS_DEVICE=args.device,
        KUBEDIFFUSERS_HOST="127.0.0.1",
        KUBEDIFFUSERS_PORT=str(port),
        KUBEDIFFUSERS_LOG_LEVEL="warning",
        KUBEDIFFUSERS_MAX_QUEUE_SIZE="256",
        **extra,
    )
    runner = Path(sys.executable).parent / "kubediffusers-runner"
    return subprocess.Popen([str(runner)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_serving_bench(args: argparse.Namespace) -> None:
    import httpx

    if Task(args.task) is not Task.TEXT_TO_IMAGE:
        raise SystemExit("kubediffusers-bench: --serving measures the text-to-image route")
    settings = _settings(args)
    pipeline, _ = _load(settings)
    port = args.port
    server = _start_server(args, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=600) as client:
            _wait_ready(client, url, server)
            for size, steps in args.configs:
                request = Request(args.prompt, steps, size, size, args.batch_size, args.guidance_scale)
                _direct(pipeline, request, 0)
                client.post(url + "/text-to-image", json=request.json(0)).raise_for_status()
                direct, http = [], []
                # Interleaved, so drift in machine load hits both sides alike.
                for seed in range(args.runs):
                    direct.append(_direct(pipeline, request, seed))
                    started = time.perf_counter()
                    client.post(url + "/text-to-image", json=request.json(seed)).raise_for_status()
                    http.append(time.perf_counter() - started)
                d, h = statistics.median(direct), statistics.median(http)
                print(
                    f"{size}x{size} {steps} steps batch {args.batch_size}: direct median {d * 1000:.1f} ms, "
                    f"HTTP median {h * 1000:.1f} ms, p90 {statistics.quantiles(http, n=10)[-1] * 1000:.1f} ms, "
                    f"overhead ratio {h / d:.3f} ({args.runs} runs)"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(client: Any, url: str, server: subprocess.Popen[bytes], timeout: float = 300) -> float:
    """Seconds until /readyz answers 200."""
    import httpx

    started = time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit("kubediffusers-bench: the runner process exited before it was ready")
        try:
            if client.get(url + "/readyz").status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            raise SystemExit(f"kubediffusers-bench: the runner did not become ready in {timeout:g} s")
        time.sleep(0.05)


def _throughput(url: str, request: Request, clients: int, total: int) -> float:
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


def run_batching_bench(args: argparse.Namespace) -> None:
    """Throughput with batching off and on, side by side, at several concurrencies."""
    import httpx

    request = Request(args.prompt, args.steps, args.height, args.width, 1, args.guidance_scale)
    servers = {
        "off": _start_server(args, args.port),
        "on": _start_server(
            args,
            args.port + 1,
            KUBEDIFFUSERS_MAX_BATCH_SIZE=str(args.max_batch_size),
            KUBEDIFFUSERS_BATCH_WINDOW_MS=str(args.batch_window_ms),
        ),
    }
    urls = {"off": f"http://127.0.0.1:{args.port}", "on": f"http://127.0.0.1:{args.port + 1}"}
    try:
        with httpx.Client(timeout=600) as client:
            for name, server in servers.items():
                _wait_ready(client, urls[name], server)
        print(
            f"request: {request.width}x{request.height}, {request.steps} steps, guidance {request.guidance_scale:g}; batching on = max "
            f"{args.max_batch_size} images, window {args.batch_window_ms:g} ms"
        )
        for clients in args.clients:
            total = max(args.runs, clients * 4)
            off = _throughput(urls["off"], request, clients, total)
            on = _throughput(urls["on"], request, clients, total)
            print(f"{clients:>3} clients: off {off:7.2f} img/s, on {on:7.2f} img/s, gain {on / off:.2f}x ({total} requests each)")
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=30)


def _config(text: str) -> tuple[int, int]:
    size, _, steps = text.partition(":")
    return int(size), int(steps or 1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--arch" or a.startswith("--arch=") for a in argv):
        # Real-size architectures, stock diffusers vs this runner: its own options (see bench_arch).
        from kubediffusers.runner.bench_arch import main as arch_main

        return arch_main(argv)
    parser = argparse.ArgumentParser(prog="kubediffusers-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="text-to-image", choices=[t.value for t in Task])
    parser.add_argument("--model-id", default=None, help="Hugging Face repo id in the cache (default with --tiny: the tiny model)")
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/models"), help="Hugging Face cache directory")
    parser.add_argument("--tiny", action="store_true", help="build and use the task's tiny random-weight model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="0 disables classifier-free guidance (turbo models)")
    parser.add_argument("--serving", action="store_true", help="compare HTTP end to end with a direct pipeline call")
    parser.add_argument(
        "--configs",
        type=_config,
        nargs="+",
        default=[(64, 1), (128, 4)],
        help="with --serving: SIZE:STEPS request shapes to measure (default 64:1 128:4)",
    )
    parser.add_argument("--port", type=int, default=8765, help="with --serving/--batching: port of the (first) runner process")
    parser.add_argument("--batching", action="store_true", help="throughput with dynamic batching off vs on")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16], help="with --batching: concurrencies")
    parser.add_argument("--max-batch-size", type=int, default=16, help="with --batching: the 'on' runner's batch limit")
    parser.add_argument("--batch-window-ms", type=float, default=5.0, help="with --batching: the 'on' runner's window")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    from kubediffusers.runner.logs import configure_logging

    configure_logging("warning")
    _prepare_model(args)
    if args.serving:
        run_serving_bench(args)
    elif args.batching:
        run_batching_bench(args)
    else:
        run_pipeline_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
