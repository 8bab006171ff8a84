#!/usr/bin/env python3
"""The benchmark suite of docs/benchmarks.md ("GPU: real architectures", "Cold start").

On a GPU machine (no Hub access needed: the architectures are built with random
weights from configs shipped in the runner):

    .venv/bin/python hack/bench_gpu.py                 # everything, figures to stdout and --out
    .venv/bin/python hack/bench_gpu.py --only sd-turbo # one step of the suite

On a CPU (what the tests and this repository's CI can run), the same steps on
the toy-size architecture, plus the cold start with torch.compile on a CPU:

    .venv/bin/python hack/bench_gpu.py --scale tiny

Each step is one `kubediffusers-bench arch --arch ...` process (a fresh CUDA context
and compile state per step); every figure line names the device it ran on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = [sys.executable, "-m", "kubediffusers.runner.dev.bench", "arch"]

# name -> arguments of kubediffusers-bench arch --arch
FULL = {
    # Target: HTTP median <= 25 ms and >= 3x stock (H100). Profile printed for the "where the time goes" part.
    "sd-turbo": [
        "--arch",
        "sd-turbo",
        "--size",
        "512",
        "--steps",
        "1",
        "--guidance-scale",
        "0",
        "--runs",
        "50",
        "--warmup-runs",
        "5",
        "--profile",
        "--cold-start",
    ],
    # Target: >= 100 img/s with batching and >= 2.5x one at a time.
    "sd-turbo-batching": [
        "--arch",
        "sd-turbo",
        "--size",
        "512",
        "--steps",
        "1",
        "--guidance-scale",
        "0",
        "--runs",
        "64",
        "--modes",
        "--batching",
        "--clients",
        "1",
        "4",
        "8",
        "16",
        "--max-batch-size",
        "16",
        # Without compile: the runner warms up one batch shape, and every new batch size
        # would recompile (and record CUDA graphs) inside the measured window.
        "--optimize",
        "compile_unet=false",
        "--optimize",
        "compile_vae=false",
    ],
    # Target: <= 1.1 s for 1024x1024, 30 steps, CFG.
    "sdxl": ["--arch", "sdxl", "--size", "1024", "--steps", "30", "--guidance-scale", "7.5", "--runs", "10", "--warmup-runs", "3", "--profile"],
    "sd15": ["--arch", "sd15", "--size", "512", "--steps", "30", "--guidance-scale", "7.5", "--runs", "10"],
}
TINY = {
    "tiny-sd": ["--arch", "tiny-sd", "--size", "64", "--steps", "2", "--runs", "10", "--warmup-runs", "2", "--cold-start"],
    # torch.compile on a CPU: cold start with a cold and then a warm compile cache (about a minute each when cold).
    "tiny-sd-compile-cold-start": [
        "--arch",
        "tiny-sd",
        "--size",
        "64",
        "--steps",
        "2",
        "--modes",
        "--cold-start",
        "--optimize",
        "compile_unet=true",
        "--optimize",
        "compile_vae=true",
    ],
    "tiny-sd-batching": [
        "--arch",
        "tiny-sd",
        "--size",
        "64",
        "--steps",
        "2",
        "--runs",
        "16",
        "--modes",
        "--batching",
        "--clients",
        "1",
        "8",
        "--max-batch-size",
        "8",
    ],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--only", nargs="+", help="steps to run (default: all of the scale's)")
    parser.add_argument("--model-dir", default=".cache/models")
    parser.add_argument("--work-dir", default=".cache/bench")
    parser.add_argument("--out", type=Path, default=None, help="also append every line to this file")
    args, extra = parser.parse_known_args()
    steps = FULL if args.scale == "full" else TINY
    names = args.only or list(steps)
    unknown = [n for n in names if n not in steps]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {list(steps)}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.scale == "tiny":
        # One intra-op thread: on a shared, small CPU, OpenMP's spinning threads
        # otherwise make every call 10-100x slower and the figures meaningless.
        env.setdefault("OMP_NUM_THREADS", "1")
    out = args.out.open("a") if args.out else None
    failed = 0
    for name in names:
        command = BENCH + steps[name] + ["--model-dir", args.model_dir, "--work-dir", args.work_dir] + extra
        header = f"== {name}: kubediffusers-bench arch {' '.join(steps[name] + extra)}  ({time.strftime('%Y-%m-%d %H:%M:%S')})"
        print(header, flush=True)
        if out:
            out.write(header + "\n")
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                if out:
                    out.write(line)
                    out.flush()
        if proc.returncode:
            failed += 1
            print(f"== {name} failed with exit status {proc.returncode}", flush=True)
    if out:
        out.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
