"""The transformer (DiT) families' hot path, applied when the pipeline loads.

Attention goes through diffusers' attention-backend API: a transformer's
attention modules dispatch to the chosen kernel themselves, so their
processors (FLUX's, SD3's joint attention) are kept, never replaced by the
UNet-era ``AttnProcessor2_0`` that cannot run them.

Compilation is regional where the transformer names its repeated blocks
(``_repeated_blocks``: FLUX's 19 double- and 38 single-stream blocks are two
shapes): each block class compiles once and is reused by every instance, so
the cold start is that of two small graphs instead of one 57-block graph,
for the same kernels at run time.
"""

from __future__ import annotations

import logging
from typing import Any

from kubediffusers.runner.errors import ModelUnavailable, one_line

log = logging.getLogger(__name__)

# settings.Attention value -> diffusers AttentionBackendName ("native": torch's
# scaled_dot_product_attention, which picks flash / memory-efficient / cuDNN kernels).
BACKENDS = {"sdpa": "native"}


def dispatches_attention(denoiser: Any) -> bool:
    """Whether every attention module of ``denoiser`` dispatches through diffusers' backends."""
    from diffusers.models.attention import AttentionModuleMixin
    from diffusers.models.attention_processor import Attention

    modules = [m for m in denoiser.modules() if isinstance(m, (Attention, AttentionModuleMixin))]
    return bool(modules) and all(isinstance(m, AttentionModuleMixin) for m in modules)


def set_attention_backend(denoiser: Any, attention: str) -> str:
    """Choose the attention kernel of a transformer; returns the applied option's name."""
    backend = BACKENDS.get(attention)
    if backend is None:
        return ""  # "default": whatever the model's processors pick
    if not dispatches_attention(denoiser):
        log.info("%s keeps its own attention processors (they do not dispatch to backends)", type(denoiser).__name__)
        return ""
    try:
        denoiser.set_attention_backend(backend)
    except (ValueError, RuntimeError) as exc:  # a backend whose kernels are not installed
        raise ModelUnavailable(f"attention backend {backend!r} is not usable here: {one_line(exc)}") from None
    return f"attention:{backend}"


def compiles_by_block(pipe: Any, denoiser: Any) -> bool:
    """Whether ``denoiser`` is the pipeline's transformer and names repeated blocks to compile one by one."""
    if getattr(pipe, "transformer", None) is not denoiser:
        return False  # a UNet: compiled whole
    if not getattr(denoiser, "_repeated_blocks", None):
        log.info("%s names no repeated blocks: compiled whole", type(denoiser).__name__)
        return False
    return True
