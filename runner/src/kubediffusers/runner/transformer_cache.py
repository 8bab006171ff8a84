"""diffusers' cache hooks for transformer (DiT) denoisers, the transformers' DeepCache.

``transformerCache`` picks one of diffusers' own step-to-step caches
(``CacheMixin.enable_cache``): ``first-block`` (First Block Cache: when the
first block's residual barely changed since the last step, the other blocks
answer with their cached residual) or ``taylorseer`` (TaylorSeer: full steps
every few, the steps between predicted from a Taylor expansion of each
block's output). Both keep per-call state that the diffusers pipeline scopes
with ``transformer.cache_context(...)``; without those contexts the hooks fail
on the first step, so a pipeline that does not open them (diffusers 0.42:
FLUX image-to-image and inpainting, SD3, Z-Image) is refused at start-up with
the reason, as is a model without the hooks (SD3's and Z-Image's
transformers) or a UNet (``deepcacheInterval`` is the UNet's).

FasterCache is left out: it needs the pipeline's classifier-free guidance
batched into one call and a timestep callback, which FLUX and Wan do not give.
"""

from __future__ import annotations

import inspect
from typing import Any

from kubediffusers.runner.errors import ModelUnavailable, one_line

# settings.TransformerCache value -> what the log line and /health call it.
KINDS = ("first-block", "taylorseer")
_MARK = "_kubediffusers_transformer_cache"


def _config(kind: str) -> Any:
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if kind == "first-block":
        # ParaAttention's suggested threshold for FLUX (diffusers' default 0.05 rarely skips a step).
        return FirstBlockCacheConfig(threshold=0.08)
    # Full steps for the first 3 and then every 3rd; in between, a first-order prediction.
    return TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=3, max_order=1)


def marks_cache_contexts(pipe: Any) -> bool:
    """Whether the diffusers pipeline opens ``transformer.cache_context`` around its denoiser calls.

    The hooks' state lives in those contexts (one per branch: cond, uncond);
    diffusers has no flag for it, so its own source is what says."""
    try:
        return "cache_context" in inspect.getsource(type(pipe).__call__)
    except (OSError, TypeError):  # no source (a frozen install): unknown, so not claimed
        return False


def enable(pipe: Any, kind: str) -> str:
    """Enable the cache on the pipeline's transformer(s); a checkpoint it cannot apply to raises ModelUnavailable."""
    from diffusers.models.cache_utils import CacheMixin

    name = type(pipe).__name__
    transformers = [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]
    if not transformers:
        raise ModelUnavailable(f"transformerCache {kind} caches transformer blocks; {name} has a UNet: leave it unset (deepcacheInterval is the UNet's)")
    model = type(transformers[0]).__name__
    if not all(isinstance(m, CacheMixin) for m in transformers):
        raise ModelUnavailable(f"transformerCache {kind}: {model} ({name}) has no diffusers cache hooks; leave it unset for this checkpoint")
    if not marks_cache_contexts(pipe):
        raise ModelUnavailable(f"transformerCache {kind}: diffusers' {name} does not scope the cache per call (no cache_context); leave it unset for this task")
    for module in transformers:
        try:
            module.enable_cache(_config(kind))
        except IndexError:  # diffusers pops the first and the last block
            raise ModelUnavailable(
                f"transformerCache {kind} needs at least two transformer blocks (the first decides for the rest); {model} has fewer"
            ) from None
        except ValueError as exc:
            raise ModelUnavailable(f"transformerCache {kind} does not apply to {model}: {one_line(exc)}") from None
    setattr(pipe, _MARK, True)
    return f"transformer-cache:{kind}"


def reset(pipe: Any) -> None:
    """Drop the state a previous call left (diffusers resets it only when a call ends normally, not when one is cancelled)."""
    if getattr(pipe, _MARK, False):
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                module._reset_stateful_cache()
