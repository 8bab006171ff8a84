"""`kubediffusers-bench arch --arch ARCH`: stock diffusers vs this runner, side by side.

One run, one harness, one request, on a real-size architecture with random
weights (:mod:`kubediffusers.runner.dev.archs`; no Hub access needed):

- ``stock``: ``DiffusionPipeline.from_pretrained(..., torch_dtype=float16)``,
  the attention processor diffusers picks, no compile, a plain ``pipe(...)`` call;
- ``optimized``: this runner's :meth:`TaskPipeline.load` with the chosen
  optimizations, called in process as the runner's worker calls it;
- ``http``: a real ``kubediffusers-runner`` process with the same
  optimizations (runner settings), a keep-alive client in this process.

Each figure line carries the device name. Optional: ``--cold-start`` (process
start to ``/readyz`` 200 with a cold and a warm compile cache, and without
compile), ``--batching`` (the ``batching`` bench on this architecture),
``--profile`` (where one optimized call spends its time), ``--modes text-encoder``
(the prompt's text encoding alone: eager, compiled, and a prompt-cache hit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kubediffusers.runner.dev.bench import harness
from kubediffusers.runner.dev.bench.harness import Request, RunnerProcess
from kubediffusers.runner.dev.bench.tools import Batching, batching_bench
from kubediffusers.runner.settings import DType, RunnerSettings, Task

# Targets from the issues: (arch, size, steps, guided) -> text.
TARGETS = {
    ("sd-turbo", 512, 1, False): "HTTP median (jpeg) <= 15 ms with the full VAE, <= 10 ms with the tiny VAE, and >= 3x faster than stock (H200, issue 16)",
    ("sdxl", 1024, 30, True): "optimized/HTTP median <= 1.1 s (H200, issue 16)",
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
PRESETS: dict[str, dict[str, str]] = {"gpu": GPU_PRESET, "cpu": CPU_PRESET, "none": {}}


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

    def line(self, device: str, what: str) -> str:
        load = f"{self.load_seconds:.2f} s" if self.load_seconds is not None else "n/a"
        warm = f"{self.warmup_seconds:.2f} s" if self.warmup_seconds is not None else "n/a"
        return (
            f"[{device}] {what} | {self.name:<9} | median {self.median * 1000:9.1f} ms | p90 {harness.p90(self.times) * 1000:9.1f} ms | "
            f"{self.images_per_call / self.median:8.2f} img/s | peak GPU mem {self.peak_memory} | load {load} | "
            f"warm-up/compile {warm} | {len(self.times)} runs{self.extra}"
        )


@dataclass
class ArchRun:
    """One arch bench's parameters, after defaults (``from_args``)."""

    arch: str
    model_id: str
    model_dir: Path
    work_dir: Path
    device: str
    dtype: str
    request: Request
    runs: int
    warmup_runs: int
    optimizations: dict[str, str]
    port: int
    timeout: float

    def runner_settings(self, compile_cache: Path | None) -> dict[str, object]:
        """What a runner process of this run is configured with (runner setting -> value)."""
        values: dict[str, object] = {
            "task": Task.TEXT_TO_IMAGE.value,
            "model_id": self.model_id,
            "model_dir": self.model_dir,
            "device": self.device,
            "model_dtype": self.dtype,
            "log_level": "info",
            "max_images_per_request": max(4, self.request.batch_size),
            **self.optimizations,
        }
        if compile_cache is not None:
            values["compile_cache_dir"] = compile_cache
        return values

    def runner(self, name: str, compile_cache: Path | None, **extra: object) -> RunnerProcess:
        return RunnerProcess(self.port, {**self.runner_settings(compile_cache), **extra}, self.work_dir / f"{name}.log")


# -- the three ways -------------------------------------------------------


def bench_stock(run: ArchRun, snapshot: Path) -> Figures:
    import torch
    from diffusers import DiffusionPipeline

    from kubediffusers.runner.families import UNKNOWN, family_of
    from kubediffusers.runner.pipelines.base import torch_dtype

    harness.reset_peak()
    started = time.perf_counter()
    # The family's half precision (bfloat16 for FLUX, whose T5 overflows float16), as the runner picks it.
    dtype = torch_dtype(DType(run.dtype), run.device, (family_of(snapshot) or UNKNOWN).gpu_dtype)
    pipe = DiffusionPipeline.from_pretrained(snapshot, torch_dtype=dtype, use_safetensors=True, local_files_only=True)
    pipe = pipe.to(run.device)
    harness.sync()
    load = time.perf_counter() - started
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int) -> None:
        request = run.request.json(seed)
        generator = torch.Generator("cpu").manual_seed(request.pop("seed"))
        pipe(**request, generator=generator)

    warm = harness.warm(call, run.warmup_runs)
    times = harness.timed(call, run.runs)
    return Figures("stock", times, run.request.batch_size, harness.peak_memory(), load, warm)  # the pipeline is freed on return


def bench_optimized(run: ArchRun, snapshot: Path, profile: bool = False) -> Figures:
    harness.reset_peak()
    settings = RunnerSettings(**{**run.runner_settings(run.work_dir / "compile-cache-in-process"), "warmup": False})  # type: ignore[arg-type]
    pipeline, load = harness.load_pipeline(settings, snapshot)
    call = harness.direct_call(pipeline, run.request)
    warm = harness.warm(call, run.warmup_runs)
    times = harness.timed(call, run.runs)
    figures = Figures("optimized", times, run.request.batch_size, harness.peak_memory(), load, warm)
    if profile:
        _profile(call, run.arch)
    return figures  # the pipeline is freed on return


def bench_text_encoder(run: ArchRun, snapshot: Path, device: str, what: str) -> None:
    """The prompt's encoding alone, three ways, in one run: diffusers' eager ``encode_prompt``,
    the same with the text encoders compiled (``compile_mode`` of the run), and a hit of the
    runner's prompt cache (what a repeated prompt costs). Issue 16 point 2 asks for both measured."""
    import torch

    from kubediffusers.runner.encoder_offload import encoders_of
    from kubediffusers.runner.optimizations import compile_text_encoders
    from kubediffusers.runner.pipelines.prompt_cache import PromptCache, family

    values = {**run.runner_settings(run.work_dir / "compile-cache-text-encoder"), "warmup": False, "compile_unet": False, "compile_vae": False}
    settings = RunnerSettings(**values)  # type: ignore[arg-type]
    pipeline, _ = harness.load_pipeline(settings, snapshot)
    pipe = pipeline.pipe
    keys = family(pipe)
    if keys is None:
        print(f"[{device}] text encoders of {run.arch}: {type(pipe).__name__} is not a family the prompt cache handles (SD, SDXL); skipped")
        return
    guided = run.request.guidance_scale > 1

    def encode(seed: int) -> object:  # a fresh cache: always a miss
        return PromptCache(1).embeddings(pipe, keys, f"{run.request.prompt}, variation {seed}", "", guided)

    encoders = encoders_of(pipe)
    names = "+".join(type(getattr(pipe, n)).__name__ for n in encoders)
    cfg = "with CFG (conditional and unconditional)" if guided else "no CFG"
    line = f"[{device}] {what} | text encoders {names}, {cfg}"
    harness.warm(encode, run.warmup_runs)
    eager = statistics.median(harness.timed(encode, run.runs))
    cache = PromptCache(8)
    hit = statistics.median(harness.timed(lambda _: cache.embeddings(pipe, keys, run.request.prompt, "", guided), run.runs + 1)[1:])
    mode = run.optimizations.get("compile_mode", "default")
    compile_text_encoders(pipe, mode)  # as the runner does with compile_text_encoder
    started = time.perf_counter()
    encode(-1)  # compiles
    harness.sync()
    compiling = time.perf_counter() - started
    harness.warm(encode, run.warmup_runs)
    compiled = statistics.median(harness.timed(encode, run.runs))
    print(
        f"{line} | eager median {eager * 1000:8.2f} ms | compiled ({mode}) median {compiled * 1000:8.2f} ms, compile {compiling:.1f} s | "
        f"prompt-cache hit median {hit * 1000:8.3f} ms | {run.runs} runs"
    )
    print(f"[{device}] {what} | text encoding: compiled is {eager / compiled:.2f}x eager; a cache hit saves {(eager - hit) * 1000:.2f} ms a call")
    torch.compiler.reset()  # the pipeline is freed on return


def _profile(call: Any, arch: str) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        call(0)
        harness.sync()
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(f"profile of one optimized call ({arch}, top 20 by {key}):")
    print(prof.key_averages().table(sort_by=key, row_limit=20))


def bench_http(run: ArchRun, formats: list[str] | None = None) -> list[Figures]:
    """HTTP end to end per output format (one runner process), with the seconds from process start to /readyz 200."""
    import httpx

    cache = run.work_dir / "compile-cache-http"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.monotonic()
    with run.runner("runner-http", cache) as server, httpx.Client(timeout=run.timeout) as client:
        server.wait_ready(client, run.timeout)
        ready = time.monotonic() - started

        figures = []
        for fmt in formats or ["png"]:
            request = replace(run.request, output_format=fmt)

            def call(seed: int, request: Request = request) -> None:
                client.post(server.url + "/text-to-image", json=request.json(seed)).raise_for_status()

            warm = harness.warm(call, run.warmup_runs)
            times = harness.timed(call, run.runs)
            peak = harness.metric(client, server.url, "kubediffusers_gpu_memory_peak_bytes")
            load = harness.metric(client, server.url, "kubediffusers_model_load_seconds")
            runner_warmup = harness.metric(client, server.url, "kubediffusers_warmup_seconds") or 0.0
            figures.append(
                Figures(
                    f"http-{fmt}",
                    times,
                    run.request.batch_size,
                    f"{peak / 2**30:.2f} GiB" if peak else "n/a (CPU)",
                    load,
                    runner_warmup + warm,
                    extra=f" | process start to ready {ready:.2f} s",
                )
            )
    return figures


def cold_start(run: ArchRun, device: str) -> None:
    """Process start to /readyz 200: no compile, compile with a cold cache, compile with a warm cache."""
    import httpx

    compiling = any(_is_true(run.optimizations.get(k)) for k in ("compile_unet", "compile_vae"))
    cache = run.work_dir / "compile-cache-cold-start"
    shutil.rmtree(cache, ignore_errors=True)
    starts: list[tuple[str, dict[str, object]]] = [("no compile", {"compile_unet": False, "compile_vae": False})]
    if compiling:
        starts += [("compile, cold compile cache", {}), ("compile, warm compile cache", {})]
    else:
        print(f"[{device}] cold start: compile is off in this run's optimizations; only the no-compile start is measured")
    for i, (what, extra) in enumerate(starts):
        started = time.monotonic()
        with run.runner(f"runner-cold-start-{i}", cache, **extra) as server, httpx.Client(timeout=run.timeout) as client:
            server.wait_ready(client, run.timeout)
            ready = time.monotonic() - started
            load = harness.metric(client, server.url, "kubediffusers_model_load_seconds")
            warm = harness.metric(client, server.url, "kubediffusers_warmup_seconds")
        print(
            f"[{device}] cold start {run.arch} ({what}): process start to /readyz 200 {ready:.2f} s "
            f"(model load {load or 0:.2f} s, warm-up {warm or 0:.2f} s; checkpoint on local disk at {run.model_dir})"
        )


def _is_true(value: object) -> bool:
    return str(value).lower() in {"1", "true", "yes", "on"}


# -- driver ---------------------------------------------------------------


def native_size(folder: Path) -> int:
    """The side an architecture was trained at: its UNet's or transformer's
    sample size in latents times the VAE factor 8; FLUX's transformer config
    has none (its pipeline's default is 128 latents: 1024 pixels)."""
    for denoiser in ("unet", "transformer"):
        config = folder / denoiser / "config.json"
        if config.is_file():
            return int(json.loads(config.read_text()).get("sample_size") or 128) * 8
    return 1024


def from_args(args: argparse.Namespace) -> ArchRun:
    """The run's parameters: the architecture's defaults where the command line left them out."""
    import torch

    from kubediffusers.runner.dev.archs import arch_folder, random_model_id

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    turbo, tiny = args.arch == "sd-turbo", args.arch.startswith("tiny")
    schnell = "flux" in args.arch  # FLUX.1-schnell: 4 steps, no guidance (families.FAMILIES)
    size = args.size
    if size is None:
        # tiny: a CPU-sized request; the tiny UNet's native 256 takes seconds per call on a CPU
        size = 64 if tiny else native_size(arch_folder(args.arch))
    steps = args.steps if args.steps is not None else (1 if turbo else (2 if tiny else (4 if schnell else 30)))
    guidance = args.guidance_scale if args.guidance_scale is not None else (0.0 if turbo or schnell else 7.5)
    preset = args.preset if args.preset != "auto" else ("gpu" if device.startswith("cuda") else "cpu")
    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return ArchRun(
        arch=args.arch,
        model_id=random_model_id(args.arch),
        model_dir=args.model_dir.resolve(),
        work_dir=work_dir,
        device=device,
        dtype=args.dtype,
        request=Request(args.prompt, steps, size, size, args.batch_size, guidance),
        runs=args.runs,
        warmup_runs=args.warmup_runs,
        optimizations={**PRESETS[preset], **dict(args.optimize)},
        port=args.port,
        timeout=args.timeout,
    )


def main(args: argparse.Namespace) -> int:
    from kubediffusers.runner.dev.archs import SOURCES, save_random_checkpoint
    from kubediffusers.runner.pipelines.base import quiet_libraries

    quiet_libraries()
    run = from_args(args)
    device = harness.device_name(run.device)
    started = time.perf_counter()
    snapshot = save_random_checkpoint(run.arch, run.model_dir)
    r = run.request
    guided = r.guidance_scale > 1
    what = (
        f"{run.arch} {r.width}x{r.height} {r.steps} step{'s' if r.steps != 1 else ''} "
        f"{'CFG ' + format(r.guidance_scale, 'g') if guided else 'no CFG'} batch {r.batch_size}"
    )
    print(f"[{device}] {run.arch}: {SOURCES.get(run.arch, '')}, random weights, checkpoint ready in {time.perf_counter() - started:.1f} s at {snapshot}")
    opts = ", ".join(f"{k}={v}" for k, v in run.optimizations.items()) or "none"
    print(f"[{device}] dtype {run.dtype}; optimized/http settings: {opts}")

    results: dict[str, Figures] = {}
    if "stock" in args.modes:
        results["stock"] = bench_stock(run, snapshot)
        print(results["stock"].line(device, what), flush=True)
    if "optimized" in args.modes:
        results["optimized"] = bench_optimized(run, snapshot, profile=args.profile)
        print(results["optimized"].line(device, what), flush=True)
    if "http" in args.modes:
        for figures in bench_http(run, args.http_formats):
            results.setdefault("http", figures)
            results[figures.name] = figures
            print(figures.line(device, what), flush=True)
    if "text-encoder" in args.modes:
        bench_text_encoder(run, snapshot, device, what)
    if "stock" in results:
        for name in [n for n in results if n not in ("stock", "http")]:
            if name in results:
                print(f"[{device}] {what} | {name} vs stock: {results['stock'].median / results[name].median:.2f}x faster (median)")
    if "optimized" in results and "http" in results:
        print(f"[{device}] {what} | HTTP overhead ratio (http/optimized median): {results['http'].median / results['optimized'].median:.3f}")
    target = TARGETS.get((run.arch, r.width, r.steps, guided))
    if target:
        print(f"[{device}] target for {what} (issue, H100): {target}")
    if args.cold_start:
        cold_start(run, device)
    if args.batching:
        print(f"[{device}] batching, {run.arch} (throughput over HTTP, batching off vs on):")
        batching = Batching(args.max_batch_size, args.batch_window_ms, tuple(args.clients), run.runs)
        one_image = Request(r.prompt, r.steps, r.height, r.width, 1, r.guidance_scale)
        batching_bench(run.runner_settings(run.work_dir / "compile-cache-batching"), one_image, batching, run.port, run.work_dir)
    return 0
