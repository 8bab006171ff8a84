"""`kubediffusers-bench --arch ARCH`: stock diffusers vs this runner, side by side.

One run, one harness, one request, on a real-size architecture with random
weights (:mod:`kubediffusers.runner.archs`; no Hub access needed):

- ``stock``: ``DiffusionPipeline.from_pretrained(..., torch_dtype=float16)``,
  the attention processor diffusers picks, no compile, a plain ``pipe(...)`` call;
- ``optimized``: this runner's :meth:`TaskPipeline.load` with the chosen
  optimizations, called in process as the runner's worker calls it;
- ``http``: a real ``kubediffusers-runner`` process with the same
  optimizations (environment variables), a keep-alive client in this process.

Each figure line carries the device name. Optional: ``--cold-start`` (process
start to ``/readyz`` 200 with a cold and a warm compile cache, and without
compile), ``--batching`` (the throughput bench of ``kubediffusers-bench
--batching`` on this architecture), ``--profile`` (where one optimized call
spends its time).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Targets from the issue, on an H100-class GPU: (arch, size, steps, guided) -> text.
TARGETS = {
    ("sd-turbo", 512, 1, False): "HTTP median <= 25 ms and >= 3x faster than stock",
    ("sdxl", 1024, 30, True): "optimized/HTTP median <= 1.1 s",
}
GPU_PRESET = {
    "attention": "sdpa",
    "channels_last": "true",
    "fuse_qkv": "true",
    "compile_unet": "true",
    "compile_vae": "true",
    "compile_mode": "max-autotune",
}
CPU_PRESET = {"attention": "sdpa", "channels_last": "true", "fuse_qkv": "true"}
INDUCTOR_ENV = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE")


@dataclass
class Figures:
    name: str
    times: list[float] = field(default_factory=list)
    images_per_call: int = 1
    peak_memory: str = "n/a"
    load_seconds: float | None = None
    warmup_seconds: float | None = None
    extra: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.times, n=10, method="inclusive")[-1] if len(self.times) > 1 else self.times[0]

    def line(self, device: str, what: str) -> str:
        load = f"{self.load_seconds:.2f} s" if self.load_seconds is not None else "n/a"
        warm = f"{self.warmup_seconds:.2f} s" if self.warmup_seconds is not None else "n/a"
        return (
            f"[{device}] {what} | {self.name:<9} | median {self.median * 1000:9.1f} ms | p90 {self.p90 * 1000:9.1f} ms | "
            f"{self.images_per_call / self.median:8.2f} img/s | peak GPU mem {self.peak_memory} | load {load} | "
            f"warm-up/compile {warm} | {len(self.times)} runs{self.extra}"
        )


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> str:
    import torch

    if not torch.cuda.is_available():
        return "n/a (CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def _request(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "prompt": args.prompt,
        "guidance_scale": args.guidance_scale,
        "num_inference_steps": args.steps,
        "height": args.size,
        "width": args.size,
        "num_images_per_prompt": args.batch_size,
        "seed": seed,
    }


def _timed(call: Any, runs: int) -> list[float]:
    times = []
    for seed in range(runs):
        started = time.perf_counter()
        call(seed)
        _sync()
        times.append(time.perf_counter() - started)
    return times


def _warm(call: Any, count: int) -> float:
    started = time.perf_counter()
    for seed in range(count):
        call(10_000 + seed)
    _sync()
    return time.perf_counter() - started


# -- the three ways -------------------------------------------------------


def bench_stock(args: argparse.Namespace, snapshot: Path) -> Figures:
    import torch
    from diffusers import DiffusionPipeline

    _reset_peak()
    dtype = _dtype(args)
    started = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(snapshot, torch_dtype=dtype, use_safetensors=True, local_files_only=True)
    pipe = pipe.to(args.device)
    _sync()
    load = time.perf_counter() - started
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int) -> None:
        request = _request(args, seed)
        generator = torch.Generator("cpu").manual_seed(request.pop("seed"))
        pipe(**request, generator=generator)

    warm = _warm(call, args.warmup_runs)
    times = _timed(call, args.runs)
    return Figures("stock", times, args.batch_size, _peak(), load, warm)  # the pipeline is freed on return


def bench_optimized(args: argparse.Namespace, snapshot: Path, profile: bool = False) -> Figures:
    from kubediffusers.runner.params import TextToImageParams
    from kubediffusers.runner.pipelines import pipeline_class
    from kubediffusers.runner.settings import RunnerSettings, Task
    from kubediffusers.runner.types import Work

    _reset_peak()
    settings = RunnerSettings(
        task=Task.TEXT_TO_IMAGE,
        model_id=args.model_id,
        model_dir=args.model_dir,
        device=args.device,
        model_dtype=args.dtype,
        warmup=False,
        compile_cache_dir=args.work_dir / "compile-cache-in-process",
        **args.optimizations,
    )
    started = time.perf_counter()
    pipeline = pipeline_class(Task.TEXT_TO_IMAGE).load(snapshot, settings)
    _sync()
    load = time.perf_counter() - started

    def call(seed: int) -> None:
        request = _request(args, seed)
        pipeline.run(Work(params=TextToImageParams(**request), seed=seed, num_images=args.batch_size))

    warm = _warm(call, args.warmup_runs)
    times = _timed(call, args.runs)
    figures = Figures("optimized", times, args.batch_size, _peak(), load, warm)
    if profile:
        _profile(call, args)
    return figures  # the pipeline is freed on return


def _profile(call: Any, args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        call(0)
        _sync()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(f"profile of one optimized call ({args.arch}, top 20 by {key}):")
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def start_runner(args: argparse.Namespace, port: int, compile_cache: Path | None, log_name: str, **extra: str) -> subprocess.Popen[bytes]:
    """A real runner process with this bench's optimizations; its log goes to the work folder."""
    env = {k: v for k, v in os.environ.items() if k not in INDUCTOR_ENV and not k.startswith("KUBEDIFFUSERS_")}
    env.update(_runner_env(args, port, compile_cache))
    env.update(extra)
    runner = Path(sys.executable).parent / "kubediffusers-runner"
    log = open(args.work_dir / f"{log_name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([str(runner)], env=env, stdout=log, stderr=subprocess.STDOUT)


def _runner_env(args: argparse.Namespace, port: int, compile_cache: Path | None) -> dict[str, str]:
    env = {
        "KUBEDIFFUSERS_TASK": "text-to-image",
        "KUBEDIFFUSERS_MODEL_ID": args.model_id,
        "KUBEDIFFUSERS_MODEL_DIR": str(args.model_dir),
        "KUBEDIFFUSERS_DEVICE": args.device,
        "KUBEDIFFUSERS_MODEL_DTYPE": args.dtype,
        "KUBEDIFFUSERS_HOST": "127.0.0.1",
        "KUBEDIFFUSERS_PORT": str(port),
        "KUBEDIFFUSERS_LOG_LEVEL": "info",
        "KUBEDIFFUSERS_MAX_QUEUE_SIZE": "256",
        "KUBEDIFFUSERS_MAX_IMAGES_PER_REQUEST": str(max(4, args.batch_size)),
    }
    env.update({f"KUBEDIFFUSERS_{k.upper()}": str(v) for k, v in args.optimizations.items()})
    if compile_cache is not None:
        env["KUBEDIFFUSERS_COMPILE_CACHE_DIR"] = str(compile_cache)
    return env


def _ready(client: Any, url: str, server: subprocess.Popen[bytes], args: argparse.Namespace, log_name: str) -> float:
    """Wait for /readyz 200; when the runner dies first, say how and show the end of its log."""
    from kubediffusers.runner.bench import _wait_ready

    try:
        return _wait_ready(client, url, server, timeout=args.timeout)
    except SystemExit:
        server.poll()
        tail = (args.work_dir / f"{log_name}.log").read_text(errors="replace").splitlines()[-15:]
        print(f"runner exit status {server.returncode}; end of {args.work_dir / (log_name + '.log')}:", *tail, sep="\n", file=sys.stderr)
        raise


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _metric(client: Any, url: str, name: str) -> float | None:
    for line in client.get(url + "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def bench_http(args: argparse.Namespace) -> tuple[Figures, float]:
    """HTTP end to end; also returns seconds from process start to /readyz 200."""
    import httpx

    cache = args.work_dir / "compile-cache-http"
    shutil.rmtree(cache, ignore_errors=True)
    url = f"http://127.0.0.1:{args.port}"
    started = time.monotonic()
    server = start_runner(args, args.port, cache, "runner-http")
    try:
        with httpx.Client(timeout=args.timeout) as client:
            _ready(client, url, server, args, "runner-http")
            ready = time.monotonic() - started

            def call(seed: int) -> None:
                client.post(url + "/text-to-image", json=_request(args, seed)).raise_for_status()

            warm = _warm(call, args.warmup_runs)
            times = _timed(call, args.runs)
            peak = _metric(client, url, "kubediffusers_gpu_memory_peak_bytes")
            load = _metric(client, url, "kubediffusers_model_load_seconds")
            runner_warmup = _metric(client, url, "kubediffusers_warmup_seconds") or 0.0
    finally:
        _stop(server)
    figures = Figures(
        "http",
        times,
        args.batch_size,
        f"{peak / 2**30:.2f} GiB" if peak else "n/a (CPU)",
        load,
        runner_warmup + warm,
        extra=f" | process start to ready {ready:.2f} s",
    )
    return figures, ready


def cold_start(args: argparse.Namespace, device: str) -> None:
    """Process start to /readyz 200: no compile, compile with a cold cache, compile with a warm cache."""
    import httpx

    compiling = _is_true(args.optimizations.get("compile_unet")) or _is_true(args.optimizations.get("compile_vae"))
    cache = args.work_dir / "compile-cache-cold-start"
    shutil.rmtree(cache, ignore_errors=True)
    runs: list[tuple[str, dict[str, str]]] = [("no compile", {"KUBEDIFFUSERS_COMPILE_UNET": "false", "KUBEDIFFUSERS_COMPILE_VAE": "false"})]
    if compiling:
        runs += [("compile, cold compile cache", {}), ("compile, warm compile cache", {})]
    else:
        print(f"[{device}] cold start: compile is off in this run's optimizations; only the no-compile start is measured")
    url = f"http://127.0.0.1:{args.port}"
    for i, (what, extra) in enumerate(runs):
        started = time.monotonic()
        server = start_runner(args, args.port, cache, f"runner-cold-start-{i}", **extra)
        try:
            with httpx.Client(timeout=args.timeout) as client:
                _ready(client, url, server, args, f"runner-cold-start-{i}")
                ready = time.monotonic() - started
                load = _metric(client, url, "kubediffusers_model_load_seconds")
                warm = _metric(client, url, "kubediffusers_warmup_seconds")
        finally:
            _stop(server)
        print(
            f"[{device}] cold start {args.arch} ({what}): process start to /readyz 200 {ready:.2f} s "
            f"(model load {load or 0:.2f} s, warm-up {warm or 0:.2f} s; checkpoint on local disk at {args.model_dir})"
        )


def batching(args: argparse.Namespace, device: str) -> None:
    """The runner's own --batching bench (same code as for the tiny model) on this architecture."""
    from kubediffusers.runner.bench import run_batching_bench

    saved = dict(os.environ)
    for name in INDUCTOR_ENV:
        os.environ.pop(name, None)
    env = _runner_env(args, args.port, args.work_dir / "compile-cache-batching")
    for name in (
        "KUBEDIFFUSERS_HOST",
        "KUBEDIFFUSERS_PORT",
        "KUBEDIFFUSERS_TASK",
        "KUBEDIFFUSERS_MODEL_ID",
        "KUBEDIFFUSERS_MODEL_DIR",
        "KUBEDIFFUSERS_DEVICE",
        "KUBEDIFFUSERS_LOG_LEVEL",
        "KUBEDIFFUSERS_MAX_QUEUE_SIZE",
    ):
        env.pop(name)
    os.environ.update(env)
    batch_args = argparse.Namespace(
        task="text-to-image",
        model_id=args.model_id,
        model_dir=args.model_dir,
        device=args.device,
        port=args.port,
        prompt=args.prompt,
        steps=args.steps,
        height=args.size,
        width=args.size,
        guidance_scale=args.guidance_scale,
        runs=args.runs,
        clients=args.clients,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
    )
    print(f"[{device}] batching, {args.arch} (throughput over HTTP, batching off vs on):")
    try:
        run_batching_bench(batch_args)
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- driver ---------------------------------------------------------------


def _dtype(args: argparse.Namespace) -> Any:
    from kubediffusers.runner.pipelines.base import torch_dtype
    from kubediffusers.runner.settings import DType

    return torch_dtype(DType(args.dtype), args.device)


def _is_true(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


def _optimization(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a runner setting, e.g. compile_mode=reduce-overhead), got {text!r}")
    return key.strip().lower().replace("-", "_"), value.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from kubediffusers.runner.archs import architectures

    parser = argparse.ArgumentParser(prog="kubediffusers-bench --arch", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch",
        required=True,
        choices=[a for a in architectures() if a != "svd"],
        help="shipped architecture, built with random weights (svd: configs only, not in this harness yet)",
    )
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/models"), help="Hugging Face cache for the random checkpoint")
    parser.add_argument("--work-dir", type=Path, default=Path(".cache/bench"), help="compile caches and runner logs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    parser.add_argument("--size", type=int, default=None, help="image height and width (default: the architecture's native size)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 1 for sd-turbo, 30 otherwise)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: 0 for sd-turbo (no CFG), 7.5 otherwise")
    parser.add_argument("--batch-size", type=int, default=1, help="images per request")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup-runs", type=int, default=3, help="untimed calls before timing (CUDA graphs record on the first ones)")
    parser.add_argument("--prompt", default="a photo of an astronaut riding a horse on mars")
    parser.add_argument("--modes", nargs="*", default=["stock", "optimized", "http"], choices=["stock", "optimized", "http"])
    parser.add_argument(
        "--optimize",
        type=_optimization,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runner optimization setting on top of the preset, e.g. compile_mode=reduce-overhead, tiny_vae_id=...",
    )
    parser.add_argument(
        "--preset",
        choices=["auto", "gpu", "cpu", "none"],
        default="auto",
        help="optimizations to start from: gpu = SDPA, channels_last, fused QKV, compile UNet+VAE max-autotune; "
        "cpu = the same without compile; auto picks by device",
    )
    parser.add_argument("--cold-start", action="store_true", help="also measure process start to ready (no compile, cold and warm compile cache)")
    parser.add_argument("--batching", action="store_true", help="also run the batching throughput bench on this architecture")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--profile", action="store_true", help="print where one optimized call spends its time")
    parser.add_argument("--port", type=int, default=8775)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a runner may take to become ready (compile)")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    return args


def _defaults(args: argparse.Namespace) -> None:
    import json

    import torch

    from kubediffusers.runner.archs import arch_folder, random_model_id

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    turbo = args.arch == "sd-turbo"
    if args.size is None and args.arch.startswith("tiny"):
        args.size = 64  # a CPU-sized request; the tiny UNet's native 256 takes seconds per call on a CPU
    if args.size is None:
        unet = json.loads((arch_folder(args.arch) / "unet" / "config.json").read_text())
        args.size = int(unet["sample_size"]) * 8
    if args.steps is None:
        args.steps = 1 if turbo else (2 if args.arch.startswith("tiny") else 30)
    if args.guidance_scale is None:
        args.guidance_scale = 0.0 if turbo else 7.5
    preset = args.preset if args.preset != "auto" else ("gpu" if args.device.startswith("cuda") else "cpu")
    args.optimizations = dict({"gpu": GPU_PRESET, "cpu": CPU_PRESET, "none": {}}[preset])
    args.optimizations.update(dict(args.optimize))
    args.model_id = random_model_id(args.arch)
    args.model_dir = args.model_dir.resolve()
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kubediffusers.runner.archs import SOURCES, save_random_checkpoint
    from kubediffusers.runner.logs import configure_logging
    from kubediffusers.runner.pipelines.base import quiet_libraries

    configure_logging("warning")
    quiet_libraries()
    _defaults(args)
    device = device_name(args.device)

    started = time.perf_counter()
    snapshot = save_random_checkpoint(args.arch, args.model_dir)
    guided = args.guidance_scale > 1
    what = (
        f"{args.arch} {args.size}x{args.size} {args.steps} step{'s' if args.steps != 1 else ''} "
        f"{'CFG ' + format(args.guidance_scale, 'g') if guided else 'no CFG'} batch {args.batch_size}"
    )
    print(f"[{device}] {args.arch}: {SOURCES.get(args.arch, '')}, random weights, checkpoint ready in {time.perf_counter() - started:.1f} s at {snapshot}")
    opts = ", ".join(f"{k}={v}" for k, v in args.optimizations.items()) or "none"
    print(f"[{device}] dtype {args.dtype}; optimized/http settings: {opts}")

    results: dict[str, Figures] = {}
    if "stock" in args.modes:
        results["stock"] = bench_stock(args, snapshot)
        print(results["stock"].line(device, what), flush=True)
    if "optimized" in args.modes:
        results["optimized"] = bench_optimized(args, snapshot, profile=args.profile)
        print(results["optimized"].line(device, what), flush=True)
    if "http" in args.modes:
        results["http"], _ = bench_http(args)
        print(results["http"].line(device, what), flush=True)
    if "stock" in results:
        for name in ("optimized", "http"):
            if name in results:
                print(f"[{device}] {what} | {name} vs stock: {results['stock'].median / results[name].median:.2f}x faster (median)")
    if "optimized" in results and "http" in results:
        print(f"[{device}] {what} | HTTP overhead ratio (http/optimized median): {results['http'].median / results['optimized'].median:.3f}")
    target = TARGETS.get((args.arch, args.size, args.steps, guided))
    if target:
        print(f"[{device}] target for {what} (issue, H100): {target}")
    if args.cold_start:
        cold_start(args, device)
    if args.batching:
        batching(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
