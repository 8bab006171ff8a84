"""Compile time of a FLUX-shaped transformer: the whole model vs its repeated blocks.

The runner compiles a transformer's repeated blocks (``compile.regional``, on
by default) rather than the whole model. This prints what that saves on a
FLUX-shaped transformer at toy width with enough blocks for the difference to
show (the tiny checkpoints have two): the first call, which compiles, and the
second, which runs the compiled code. Each way runs in its own process with an
empty Inductor cache.

    .venv/bin/python hack/bench_regional_compile.py [--double 4] [--single 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time


def measure(how: str, double: int, single: int, device: str) -> str:
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ).eval()
    model.to(device)
    if how == "whole":
        model = torch.compile(model)
    else:
        model.compile_repeated_blocks()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 256, 16, generator=g).to(device),
        "encoder_hidden_states": torch.randn(1, 32, 32, generator=g).to(device),
        "pooled_projections": torch.randn(1, 32, generator=g).to(device),
        "timestep": torch.tensor([0.5], device=device),
        "img_ids": torch.zeros(256, 3, device=device),
        "txt_ids": torch.zeros(32, 3, device=device),
        "return_dict": False,
    }
    times = []
    with torch.inference_mode():
        for _ in range(2):
            started = time.perf_counter()
            model(**inputs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return f"{how:<8} ({double} double + {single} single blocks, {device}): first call (compiles) {times[0]:6.1f} s, second call {times[1] * 1000:7.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--double", type=int, default=4)
    parser.add_argument("--single", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["regional", "whole"], help=argparse.SUPPRESS)  # one way, in this process
    args = parser.parse_args()
    if args.only:
        print(measure(args.only, args.double, args.single, args.device), flush=True)
        return 0
    for how in ("regional", "whole"):
        with tempfile.TemporaryDirectory() as cache:
            env = {
                **os.environ,
                "TORCHINDUCTOR_CACHE_DIR": cache,
                "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            }
            argv = [sys.executable, __file__, "--only", how, "--double", str(args.double), "--single", str(args.single), "--device", args.device]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            print(done.stdout.strip() or f"{how}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
