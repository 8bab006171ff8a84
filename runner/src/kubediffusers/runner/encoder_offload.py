"""Text encoders kept in CPU memory, for GPUs too small for the whole pipeline.

The big text encoders of the DiT families (FLUX's and SD3's T5-XXL: 9.5 GB in
bfloat16; Z-Image's Qwen3-4B: 8 GB; Wan's UMT5-XXL: 11 GB) run once per
request, for a few milliseconds, yet hold as much GPU memory as the
transformer. With ``textEncoderOffload`` they stay in CPU memory and
diffusers' group offloading streams their layers to the GPU as each runs
(leaf level, prefetching the next layer on a CUDA stream), while the
transformer and the VAE stay on the GPU: a 24 GB GPU then serves FLUX.1
without ``cpuOffload``'s moving of the 24 GB transformer on every request.
"""

from __future__ import annotations

from typing import Any

import torch

from kubediffusers.runner.errors import ModelUnavailable

ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def encoders_of(pipe: Any) -> list[str]:
    return [name for name in ENCODERS if isinstance(getattr(pipe, name, None), torch.nn.Module)]


def place(pipe: Any, device: str) -> Any:
    """Every component on ``device`` but the text encoders, which are onloaded layer by layer as they run."""
    from diffusers.hooks import apply_group_offloading

    name = type(pipe).__name__
    encoders = encoders_of(pipe)
    if not encoders:
        raise ModelUnavailable(f"textEncoderOffload keeps text encoders in CPU memory; {name} has none: leave it unset for this checkpoint")
    for component, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and component not in encoders:
            module.to(device)
    onload = torch.device(device)
    # Streams overlap a layer's copy with the previous layer's compute; a CPU has none (and needs no copy).
    stream = onload.type == "cuda"
    for component in encoders:
        apply_group_offloading(getattr(pipe, component), onload_device=onload, offload_device=torch.device("cpu"), offload_type="leaf_level", use_stream=stream)
    return pipe
