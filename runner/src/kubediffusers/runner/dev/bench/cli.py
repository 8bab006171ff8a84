"""`kubediffusers-bench SUBCOMMAND`: pipeline, serving, batching, arch, output (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubediffusers.runner.dev.bench.harness import BenchError, Request
from kubediffusers.runner.settings import RunnerSettings, Task


def _config(text: str) -> tuple[int, int]:
    size, _, steps = text.partition(":")
    return int(size), int(steps or 1)


def _optimization(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a runner setting, e.g. compile_mode=reduce-overhead), got {text!r}")
    return key.strip().lower().replace("-", "_"), value.strip()


def _model_options(parser: argparse.ArgumentParser, port: int) -> None:
    """What the pipeline, serving and batching benches share: the model and one request."""
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
    parser.add_argument("--port", type=int, default=port, help="port of the (first) runner process")


def _batching_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrencies")
    parser.add_argument("--max-batch-size", type=int, default=16, help="the 'on' runner's batch limit")
    parser.add_argument("--batch-window-ms", type=float, default=5.0, help="the 'on' runner's window")


def _arch_options(parser: argparse.ArgumentParser) -> None:
    from kubediffusers.runner.dev.archs import architectures

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
    parser.add_argument(
        "--modes",
        nargs="*",
        default=["stock", "optimized", "http"],
        choices=["stock", "optimized", "http", "text-encoder"],
        help="text-encoder: the prompt's encoding alone, eager vs compiled vs a prompt-cache hit",
    )
    parser.add_argument("--http-formats", nargs="+", default=["png"], choices=["png", "jpeg", "webp"], help="output formats of the http mode (one row each)")
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
    _batching_options(parser)
    parser.add_argument("--profile", action="store_true", help="print where one optimized call spends its time")
    parser.add_argument("--port", type=int, default=8775)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a runner may take to become ready (compile)")


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=30, help="interleaved runs per row")
    parser.add_argument("--batch-size", type=int, default=4, help="images per request in the batched rows")
    parser.add_argument("--call-ms", type=float, default=40.0, help="the throughput stub's device time per call")
    parser.add_argument("--image-ms", type=float, default=2.0, help="... and per image")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients of the throughput comparison (default: 4 x --max-batch-size)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="sample the serving process with py-spy; raw profile in DIR")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="also serve from another checkout (e.g. a git worktree of main), its requests alternating with ours",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the throughput comparison (the pipeline alone, then serving)")
    parser.add_argument("--port", type=int, default=8785)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kubediffusers-bench", description="The runner's benchmarks.")
    commands = top.add_subparsers(dest="command", required=True, metavar="{pipeline,serving,batching,arch,output}")
    _model_options(commands.add_parser("pipeline", help="load and inference time, time per output, peak GPU memory"), 8765)
    serving = commands.add_parser("serving", help="HTTP end to end vs a direct pipeline call (text-to-image)")
    _model_options(serving, 8765)
    serving.add_argument("--configs", type=_config, nargs="+", default=[(64, 1), (128, 4)], help="SIZE:STEPS request shapes (default 64:1 128:4)")
    batching = commands.add_parser("batching", help="throughput with dynamic batching off vs on (text-to-image)")
    _model_options(batching, 8765)
    _batching_options(batching)
    _arch_options(commands.add_parser("arch", help="stock diffusers vs this runner on a real-size architecture (random weights)"))
    _output_options(commands.add_parser("output", help="the serving path's own cost on a stub pipeline: encoders, per request, throughput share"))
    return top


def _settings(args: argparse.Namespace) -> RunnerSettings:
    model_id = args.model_id
    if args.tiny:
        from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id

        model_id = model_id or tiny_model_id(args.task)
        ensure_tiny_model(args.task, args.model_dir)
    if not model_id:
        raise BenchError("--model-id is required unless --tiny is given")
    return RunnerSettings(task=args.task, model_id=model_id, model_dir=args.model_dir, device=args.device, warmup=False)


def main(argv: list[str] | None = None) -> int:
    from kubediffusers.runner.dev.bench import arch, tools
    from kubediffusers.runner.logs import configure_logging

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.runs < 2:
        parser().error("--runs must be at least 2")
    if getattr(args, "rounds", 1) < 1:
        parser().error("--rounds must be at least 1")
    configure_logging("warning")
    if args.command == "arch":
        return arch.main(args)
    if args.command == "output":
        from kubediffusers.runner.dev.bench.output import OutputBench, run

        run(
            OutputBench(
                args.runs,
                args.batch_size,
                args.call_ms,
                args.image_ms,
                args.clients,
                args.max_batch_size,
                args.batch_window_ms,
                args.port,
                args.profile,
                args.baseline,
                args.rounds,
            )
        )
        return 0
    if args.command != "pipeline" and Task(args.task) is not Task.TEXT_TO_IMAGE:
        raise BenchError(f"{args.command} measures the text-to-image route")
    settings = _settings(args)
    request = Request(args.prompt, args.steps, args.height, args.width, args.batch_size, args.guidance_scale)
    if args.command == "pipeline":
        tools.pipeline_bench(settings, request, args.runs)
    elif args.command == "serving":
        shapes = [Request(args.prompt, steps, size, size, args.batch_size, args.guidance_scale) for size, steps in args.configs]
        tools.serving_bench(settings, shapes, args.runs, args.port)
    else:
        runner = {"task": settings.task.value, "model_id": settings.model_id, "model_dir": settings.model_dir, "device": settings.device}
        one_image = Request(args.prompt, args.steps, args.height, args.width, 1, args.guidance_scale)
        batching = tools.Batching(args.max_batch_size, args.batch_window_ms, tuple(args.clients), args.runs)
        tools.batching_bench(runner, one_image, batching, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
