"""Speed and memory options, applied once when the pipeline loads.

Each is opt-in from the pipeline's spec (``runner.optimizations``) except SDPA
attention, which is PyTorch's fused attention and a safe default everywhere.
Options a pipeline's architecture does not support are skipped with a log line
rather than failing the load: the same spec must work for SD, SDXL and SVD.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from kubediffusers.runner import hotpath
from kubediffusers.runner.encoder_offload import encoders_of
from kubediffusers.runner.errors import ModelUnavailable, one_line
from kubediffusers.runner.pipelines.buckets import Buckets, allow_bucket_graphs
from kubediffusers.runner.settings import Attention, CpuOffload, RunnerSettings, TransformerCache
from kubediffusers.runner.snapshots import locate

log = logging.getLogger(__name__)


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def place(pipe: Any, settings: RunnerSettings, device: str) -> Any:
    """Move the pipeline to its device, or set up CPU offload for small GPUs."""
    if settings.text_encoder_offload:  # on a CPU too: the same hooks run, onloading to where they already are
        from kubediffusers.runner import encoder_offload

        return encoder_offload.place(pipe, device)
    if settings.cpu_offload is CpuOffload.NONE or device == "cpu":
        return pipe.to(device)
    if settings.cpu_offload is CpuOffload.MODEL:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    return pipe


def load_tiny_vae(settings: RunnerSettings, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderTiny

    assert settings.tiny_vae_id is not None
    # The fetcher takes the tiny VAE at main, default weights (addons.add_ons, fetch.config: for_add_on).
    snapshot = locate(settings.model_dir, settings.tiny_vae_id, "main", what="tiny VAE").path
    try:
        return AutoencoderTiny.from_pretrained(snapshot, dtype=dtype, use_safetensors=True, local_files_only=True)
    except Exception as exc:  # any failure here means the option cannot be honoured
        raise ModelUnavailable(
            f"tiny VAE {settings.tiny_vae_id} is not usable from the cache ({one_line(exc, 300)}); "
            "the fetcher downloads it when KUBEDIFFUSERS_TINY_VAE_ID is set"
        ) from None


def apply(pipe: Any, settings: RunnerSettings, dtype: torch.dtype) -> list[str]:
    """Apply the configured options; return the names of those applied."""
    applied: list[str] = []
    denoiser = _denoiser(pipe)

    if settings.tiny_vae_id:
        pipe.vae = load_tiny_vae(settings, dtype).to(pipe.device)
        applied.append("tiny-vae")

    # Forcing AttnProcessor2_0 is for UNets only: transformer (DiT) families (FLUX, SD3,
    # Wan, LTX-Video) have their own processors and choose kernels through diffusers' backends.
    unet: Any = getattr(pipe, "unet", None)
    if getattr(pipe, "transformer", None) is not None and denoiser is pipe.transformer:
        applied.append(hotpath.set_attention_backend(denoiser, settings.attention.value))
    elif settings.attention is Attention.SDPA and hasattr(unet, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor2_0

        try:
            unet.set_attn_processor(AttnProcessor2_0())
            applied.append("sdpa")
        except (ValueError, TypeError) as exc:  # e.g. architectures with their own processors
            log.info("keeping the checkpoint's attention processors: %s", exc)

    if settings.fuse_qkv:
        applied.append(_fuse_qkv(pipe, denoiser))

    if settings.channels_last:
        for module in (denoiser, getattr(pipe, "vae", None)):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        applied.append("channels-last")

    vae = getattr(pipe, "vae", None)
    if settings.vae_slicing and vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
        applied.append("vae-slicing")
    if settings.vae_tiling and vae is not None and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
        applied.append("vae-tiling")

    if settings.deepcache_interval > 0:
        applied.append(_enable_deepcache(pipe, settings.deepcache_interval))
    if settings.transformer_cache is not TransformerCache.NONE:
        from kubediffusers.runner import transformer_cache

        applied.append(transformer_cache.enable(pipe, settings.transformer_cache.value))

    if dtype == torch.float16 and str(pipe.device).startswith("cuda") and torch.cuda.is_bf16_supported():
        applied.append(vae_without_upcast(pipe))

    if settings.compiles:
        applied.extend(_compile(pipe, settings))
        if str(pipe.device).startswith("cuda"):
            # Compiled shapes are fixed by warm-up: let cuDNN pick its fastest convolutions once per shape.
            torch.backends.cudnn.benchmark = True
            applied.append("cudnn-benchmark")
    return [name for name in applied if name]


def vae_without_upcast(pipe: Any) -> str:
    """SDXL's VAE overflows in float16, so diffusers upcasts it to float32 on every
    call (``force_upcast``): a copy of its weights each way per request, which
    also breaks CUDA graphs. In bfloat16 (float32's range) it needs none; the
    latents are cast at the decoder's door and the rest of the pipeline stays float16."""
    from diffusers import AutoencoderKL

    vae = getattr(pipe, "vae", None)
    # Only pipelines with upcast_vae (SDXL's, the x4 upscaler) upcast; SD 1.x/2.x never do.
    if not isinstance(vae, AutoencoderKL) or not vae.config.force_upcast or not hasattr(pipe, "upcast_vae"):
        return ""
    vae.to(torch.bfloat16)
    vae.register_to_config(force_upcast=False)
    decode = vae.decode

    def decode_bf16(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return decode(latents.to(torch.bfloat16), *args, **kwargs)

    vae.decode = decode_bf16
    return "vae-bf16"


def _fuse_qkv(pipe: Any, denoiser: Any) -> str:
    """Fuse the QKV projections of each model that has them. The pipelines'
    own ``fuse_qkv_projections`` refuses any VAE but AutoencoderKL (a tiny VAE
    has no attention to fuse), so the models are fused one by one."""
    from diffusers import AutoencoderKL

    vae = getattr(pipe, "vae", None)
    fused = []
    if denoiser is not None and hasattr(denoiser, "fuse_qkv_projections"):
        denoiser.fuse_qkv_projections()
        fused.append("denoiser")
    if isinstance(vae, AutoencoderKL):
        vae.fuse_qkv_projections()
        fused.append("vae")
    if not fused:
        log.info("fuse_qkv: %s has no fused projections; skipped", type(pipe).__name__)
        return ""
    # What the pipeline's own method records, so that unfuse_qkv_projections undoes both.
    pipe.fusing_unet, pipe.fusing_vae = "denoiser" in fused, "vae" in fused
    return "fused-qkv"


def _enable_deepcache(pipe: Any, interval: int) -> str:
    if getattr(pipe, "unet", None) is None:
        # Refused, not skipped: the spec asks for something this checkpoint cannot do.
        raise ModelUnavailable(f"deepcacheInterval reuses UNet features; {type(pipe).__name__} has a transformer, not a UNet: set it to 0 for this checkpoint")
    from kubediffusers.runner.feature_reuse import UNetFeatureReuse

    reuse = UNetFeatureReuse(pipe, interval)
    reuse.enable()
    pipe._kubediffusers_deepcache = reuse  # keeps it alive with the pipeline
    return f"deepcache-{interval}"


def configure_compile_cache(settings: RunnerSettings) -> None:
    """Inductor and Triton keep compiled kernels on the model claim, so a
    restarted pod loads them instead of compiling again."""
    cache = settings.resolved_compile_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(cache / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")


def _compile(pipe: Any, settings: RunnerSettings) -> list[str]:
    configure_compile_cache(settings)
    # One static graph per compiled batch size and image size: pipelines.buckets.
    allow_bucket_graphs(Buckets.of(settings), len(settings.compile_sizes or ()))
    mode = settings.compile_mode.value
    done = []
    denoiser = _denoiser(pipe)
    if settings.compile_unet and denoiser is not None and settings.compile_regional and hotpath.compiles_by_block(pipe, denoiser):
        denoiser.compile_repeated_blocks(mode=mode, dynamic=False)  # in place: each repeated block compiles once, not the whole graph
        done.append(f"compiled-blocks:{mode}")
    elif settings.compile_unet and denoiser is not None:
        compiled = torch.compile(denoiser, mode=mode, dynamic=False)
        if getattr(pipe, "unet", None) is denoiser:
            pipe.unet = compiled
        else:
            pipe.transformer = compiled
        done.append(f"compiled-unet:{mode}")
    if settings.compile_vae and getattr(pipe, "vae", None) is not None:
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=mode, dynamic=False)
        done.append(f"compiled-vae:{mode}")
    if settings.compile_text_encoder:
        done.extend(compile_text_encoders(pipe, mode))
    return done


def compile_text_encoders(pipe: Any, mode: str) -> list[str]:
    """Compile each text encoder's forward, its outputs copied as they leave the graph.

    The module stays itself (encode_prompt reads its dtype and config). The copy is
    for CUDA graphs (reduce-overhead, max-autotune): a graph's outputs live in buffers
    its next run overwrites, yet encode_prompt runs an encoder twice with guidance and
    keeps the first run's pooled output (SDXL), and the prompt cache keeps them all.
    A few small copies; the eager encoder is hundreds of kernel launches."""
    from torch.utils._pytree import tree_map_only

    done = []
    for name in encoders_of(pipe):
        encoder = getattr(pipe, name)
        compiled = torch.compile(encoder.forward, mode=mode, dynamic=False)

        def forward(*args: Any, _compiled: Any = compiled, **kwargs: Any) -> Any:
            return tree_map_only(torch.Tensor, torch.clone, _compiled(*args, **kwargs))

        encoder.forward = forward
        done.append(f"compiled-{name.replace('_', '-')}:{mode}")
    return done
