"""Tiny random-weight checkpoints, built locally, for tests and `make run`.

They use the real architectures at toy sizes and are written with
``save_pretrained`` into a Hugging Face cache layout
(``models--org--name/snapshots/<commit>/`` plus ``refs/<revision>``), so the
runner loads them through exactly the code path a fetched checkpoint takes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubediffusers.runner.dev.tiny_video import TINY_T5_VOCAB, _tiny_t5_tokenizer, build_ltx, build_wan, build_wan_i2v
from kubediffusers.runner.fetch.marker import repo_folder
from kubediffusers.runner.settings import Task
from kubediffusers.runner.tasks import TASKS

TINY_ORG = "kubediffusers"
# Bumped whenever the tiny architectures change, so stale caches are rebuilt.
TINY_FORMAT_VERSION = "1"


def tiny_model_id(task: Task | str, arch: str | None = None) -> str:
    """kubediffusers/tiny-<task> for the task's default architecture, else
    kubediffusers/tiny-<arch> (e.g. kubediffusers/tiny-sdxl)."""
    task = Task(task)
    arch = TASK_ARCHITECTURES.get((arch, task), arch) if arch else arch
    if arch is None or arch == DEFAULT_ARCHITECTURE[task]:
        return f"{TINY_ORG}/tiny-{task.value}"
    return f"{TINY_ORG}/tiny-{arch}"


def _byte_level_alphabet() -> list[str]:
    # CLIP's byte-to-unicode table: every byte gets a printable character.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tiny_tokenizer() -> Any:
    """A CLIP BPE tokenizer over a generated vocabulary: every byte alone and
    as a word end, plus merges of the most common English letter pairs."""
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = [("t", "h"), ("h", "e</w>"), ("i", "n"), ("e", "r"), ("a", "n"), ("r", "e"), ("o", "n</w>"), ("a", "t")]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)


def _clip_text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=77,
        **extra,
    )


def _tiny_unet(**extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    kwargs.update(extra)
    return UNet2DConditionModel(**kwargs)


def _tiny_vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    kwargs: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    kwargs.update(extra)
    return AutoencoderKL(**kwargs)


def _stable_diffusion_components() -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel

    return {
        "unet": _tiny_unet(),
        "vae": _tiny_vae(),
        "text_encoder": CLIPTextModel(_clip_text_config()),
        "tokenizer": _tiny_tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            timestep_spacing="trailing",
            steps_offset=1,
        ),
    }


def build_stable_diffusion(folder: Path) -> None:
    """SD 1.x/2.x-shaped text-to-image checkpoint (also serves image-to-image
    and inpainting through diffusers' auto pipelines, as real SD does)."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        **_stable_diffusion_components(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_stable_diffusion_inpainting(folder: Path) -> None:
    """SD inpainting-shaped checkpoint: the UNet takes 9 channels (4 latent,
    1 mask, 4 masked-image latent), like runwayml's and SD 2's inpainting models."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    torch.manual_seed(0)
    components = _stable_diffusion_components()
    components["unet"] = _tiny_unet(in_channels=9)
    pipe = StableDiffusionInpaintPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


def _tiny_sdxl_unet() -> Any:
    return _tiny_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids + pooled text
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
    )


def build_stable_diffusion_xl(folder: Path) -> None:
    """SDXL-shaped checkpoint: two CLIP text encoders (the second with a
    projection, whose pooled output and the size/crop ids feed the UNet's
    "text_time" embedding). Serves text-to-image, image-to-image and inpainting
    through the auto pipelines, as SDXL and SDXL-Turbo do."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    text_config = _clip_text_config(projection_dim=32)
    pipe = StableDiffusionXLPipeline(
        unet=_tiny_sdxl_unet(),
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=_tiny_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer_2=_tiny_tokenizer(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1),
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_stable_video_diffusion(folder: Path) -> None:
    """Stable Video Diffusion-shaped checkpoint: spatio-temporal UNet, a VAE
    with a temporal decoder and a CLIP image encoder for conditioning."""
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=8,  # noisy latents + the conditioning image's latents
        out_channels=4,
        # Attention only at the lower resolution keeps a CPU step well under a second.
        down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
        up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        projection_class_embeddings_input_dim=3 * 32,  # fps, motion bucket, noise augmentation
        addition_time_embed_dim=32,
        num_frames=4,  # the default video length
    )
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        latent_channels=4,
    )
    # SVD resizes the conditioning image to 224x224 for CLIP, so the encoder
    # must take that size; 32-pixel patches keep it at 49 tokens.
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
            intermediate_size=37,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_stable_diffusion_upscaler(folder: Path) -> None:
    """SD x4 upscaler-shaped checkpoint: the UNet denoises latents at the input
    image's size with the noised low-res image concatenated (4 + 3 channels),
    conditioned on the noise level; a 3-level VAE decodes them 4x larger."""
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    pipe = StableDiffusionUpscalePipeline(
        unet=_tiny_unet(
            block_out_channels=(32, 32, 64),
            in_channels=7,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=8,
            use_linear_projection=True,
            num_class_embeds=351,  # one per noise level up to max_noise_level
        ),
        vae=_tiny_vae(
            block_out_channels=(32, 32, 64),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            scaling_factor=0.08333,  # the x4 upscaler's own value
        ),
        text_encoder=CLIPTextModel(_clip_text_config()),
        tokenizer=_tiny_tokenizer(),
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction", steps_offset=1),
        max_noise_level=350,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_stable_diffusion_image_variation(folder: Path) -> None:
    """lambdalabs/sd-image-variations-shaped checkpoint: the UNet is
    conditioned on a CLIP image embedding instead of text."""
    import torch
    from diffusers import StableDiffusionImageVariationPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    components = _stable_diffusion_components()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
            intermediate_size=37,
        )
    )
    pipe = StableDiffusionImageVariationPipeline(
        vae=components["vae"],
        image_encoder=image_encoder,
        unet=components["unet"],
        scheduler=components["scheduler"],
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


# Qwen's chat format, which Z-Image wraps every prompt in.
_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_qwen_tokenizer() -> Any:
    """A Qwen2-style byte-level BPE tokenizer with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    merges = [("t", "h"), ("i", "n"), ("e", "r"), ("a", "n")]
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    qwen = Qwen2TokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None, chat_template=_QWEN_CHAT_TEMPLATE
    )
    qwen.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return qwen


def _tiny_t5_encoder() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=TINY_T5_VOCAB, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, decoder_start_token_id=0))


def _tiny_flow_vae(latent_channels: int, sample_size: int, levels: int = 4) -> Any:
    """A FLUX/SD3-style VAE at toy width: by default four levels (8x smaller latents), no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(4,) * levels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,  # attention over 128x128 latents would dominate a CPU run
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def _flux_components(guidance_embeds: bool) -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    return {
        # 4 latent channels packed 2x2 into 16 per token, as FLUX packs its 16 into 64.
        "transformer": FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
            guidance_embeds=guidance_embeds,
        ),
        # One level: FLUX's pipeline hard-codes 128 latents as its default size, so an
        # 8x VAE would decode 1024x1024 pixels on every CPU test (seconds of convolutions).
        "vae": _tiny_flow_vae(latent_channels=4, sample_size=128, levels=1),
        "text_encoder": CLIPTextModel(_clip_text_config(projection_dim=32)),
        "tokenizer": _tiny_tokenizer(),
        "text_encoder_2": _tiny_t5_encoder(),
        "tokenizer_2": _tiny_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, shift=3.0),
    }


def build_flux(folder: Path) -> None:
    """FLUX.1-schnell-shaped checkpoint: a double- and single-stream MMDiT, CLIP
    for the pooled prompt and T5 for its tokens, latents packed 2x2 per token.
    No guidance embedding, as schnell. Serves text-to-image, image-to-image and
    inpainting through diffusers' auto pipelines, as FLUX does."""
    import torch
    from diffusers import FluxPipeline

    torch.manual_seed(0)
    FluxPipeline(**_flux_components(guidance_embeds=False)).save_pretrained(folder, safe_serialization=True)


def build_flux_dev(folder: Path) -> None:
    """FLUX.1-dev-shaped checkpoint: build_flux's with the distilled guidance
    embedding (``guidance_embeds``), which is how the runner tells dev from schnell."""
    import torch
    from diffusers import FluxPipeline

    torch.manual_seed(0)
    FluxPipeline(**_flux_components(guidance_embeds=True)).save_pretrained(folder, safe_serialization=True)


def build_flux_kontext(folder: Path) -> None:
    """FLUX.1-Kontext-dev-shaped checkpoint (FluxKontextPipeline): the FLUX
    transformer with the distilled guidance embedding, conditioned on the
    input image's latents appended to its own tokens. Serves image-to-image.

    The FLUX components at toy size: Kontext's cost on a CPU is not the model
    but the size diffusers picks (about a megapixel unless told), which the
    runner sets to the fitted input's."""
    import torch
    from diffusers import FluxKontextPipeline

    torch.manual_seed(0)
    FluxKontextPipeline(**_flux_components(guidance_embeds=True)).save_pretrained(folder, safe_serialization=True)


def build_sd3(folder: Path) -> None:
    """Stable Diffusion 3 / 3.5-shaped checkpoint: an MMDiT with 2x2 patches,
    two CLIP encoders with projections and T5 as the third."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    text_config = _clip_text_config(projection_dim=32)
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8,  # latents: 64 pixels
            patch_size=2,
            in_channels=16,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,
            pooled_projection_dim=64,  # both CLIPs' pooled outputs, concatenated
            out_channels=16,
        ),
        vae=_tiny_flow_vae(latent_channels=16, sample_size=64),  # 16 latent channels, as SD3's inpainting pipeline requires
        text_encoder=CLIPTextModelWithProjection(text_config),
        tokenizer=_tiny_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer_2=_tiny_tokenizer(),
        text_encoder_3=_tiny_t5_encoder(),
        tokenizer_3=_tiny_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_z_image(folder: Path) -> None:
    """Z-Image-shaped checkpoint: a single-stream DiT over image and caption
    tokens, a Qwen3 text encoder reading the chat-formatted prompt, the FLUX VAE
    shape with 16 latent channels."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    tokenizer = _tiny_qwen_tokenizer()
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=1024,
        )
    )
    pipe = ZImagePipeline(
        transformer=transformer,
        vae=_tiny_flow_vae(latent_channels=16, sample_size=64),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.save_pretrained(folder, safe_serialization=True)


# Tiny architectures by name. A task's default architecture gets the model id
# kubediffusers/tiny-<task>; any other gets kubediffusers/tiny-<architecture>.
ARCHITECTURES: dict[str, Callable[[Path], None]] = {
    "sd": build_stable_diffusion,
    "sd-inpainting": build_stable_diffusion_inpainting,
    "sdxl": build_stable_diffusion_xl,
    "svd": build_stable_video_diffusion,
    "sd-x4-upscaler": build_stable_diffusion_upscaler,
    "sd-image-variation": build_stable_diffusion_image_variation,
    "flux": build_flux,
    "flux-dev": build_flux_dev,
    "flux-kontext": build_flux_kontext,
    "sd3": build_sd3,
    "z-image": build_z_image,
    "wan": build_wan,
    "wan-i2v": build_wan_i2v,
    "ltx": build_ltx,
}

# The registry row's tiny architecture: kubediffusers/tiny-<task> is built with it.
DEFAULT_ARCHITECTURE: dict[Task, str] = {task: spec.tiny_arch for task, spec in TASKS.items()}

# Which tasks each architecture can serve (mirrors what real checkpoints of that shape do).
ARCHITECTURE_TASKS: dict[str, frozenset[Task]] = {
    "sd": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "sd-inpainting": frozenset({Task.INPAINTING}),
    "sdxl": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "svd": frozenset({Task.IMAGE_TO_VIDEO}),
    "sd-x4-upscaler": frozenset({Task.UPSCALE}),
    "sd-image-variation": frozenset({Task.IMAGE_VARIATION}),
    "flux": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "flux-dev": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "flux-kontext": frozenset({Task.IMAGE_TO_IMAGE}),
    "sd3": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "z-image": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE, Task.INPAINTING}),
    "wan": frozenset({Task.TEXT_TO_VIDEO}),
    "wan-i2v": frozenset({Task.IMAGE_TO_VIDEO}),
    "ltx": frozenset({Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO}),
}

# Families that publish one checkpoint per task: --arch wan with image-to-video builds Wan's I2V shape.
TASK_ARCHITECTURES: dict[tuple[str, Task], str] = {("wan", Task.IMAGE_TO_VIDEO): "wan-i2v"}

BUILDERS: dict[Task, Callable[[Path], None]] = {task: ARCHITECTURES[arch] for task, arch in DEFAULT_ARCHITECTURE.items()}


def _snapshot_commit(folder: Path) -> str:
    """A stable fake commit id: the hash of every file in the snapshot."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_tiny_model(task: Task | str, model_dir: Path, revision: str = "main", arch: str | None = None) -> Path:
    """Build the task's tiny checkpoint (of architecture ``arch``, default the
    task's own) into ``model_dir`` unless it is already there; return its
    snapshot folder. Safe to call on every start."""
    task = Task(task)
    arch = arch or DEFAULT_ARCHITECTURE[task]
    arch = TASK_ARCHITECTURES.get((arch, task), arch)
    builder = ARCHITECTURES.get(arch)
    if builder is None:
        raise ValueError(f"no tiny architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if task not in ARCHITECTURE_TASKS[arch]:
        raise ValueError(f"the tiny {arch} architecture cannot serve {task.value}")
    return _ensure_snapshot(repo_folder(model_dir, tiny_model_id(task, arch)), revision, builder)


TINY_VAE_ID = f"{TINY_ORG}/tiny-taesd"


def build_tiny_autoencoder(folder: Path) -> None:
    """A TAESD-shaped AutoencoderTiny (runner.optimizations.tinyVaeId)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
        upsampling_scaling_factor=2,
    ).save_pretrained(folder, safe_serialization=True)


def ensure_tiny_vae(model_dir: Path) -> Path:
    """The tiny autoencoder's snapshot in ``model_dir``, built on first use."""
    return _ensure_snapshot(repo_folder(model_dir, TINY_VAE_ID), "main", build_tiny_autoencoder)


# -- add-ons: LoRA adapters and safety checkers for the tiny models -------------

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers looks for first
# The tiny architectures an adapter can be built for, and the pipeline class that saves it.
_LORA_TARGETS: dict[str, tuple[Callable[[], Any], str]] = {
    "sd": (lambda: _tiny_unet(), "StableDiffusionPipeline"),
    "sdxl": (lambda: _tiny_sdxl_unet(), "StableDiffusionXLPipeline"),
}


def build_tiny_lora(folder: Path, arch: str = "sd", seed: int = 0, weight_name: str = LORA_WEIGHT_NAME) -> None:
    """A LoRA adapter for a tiny architecture's UNet: random low-rank weights on
    every attention projection, saved as diffusers' save_lora_weights does (the
    peft state dict in diffusers' key format, safetensors)."""
    import diffusers
    import torch
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    make_unet, pipeline = _LORA_TARGETS[arch]
    unet = make_unet()
    torch.manual_seed(seed)
    # init_lora_weights=False: B random too (peft's default zeroes it, an adapter that changes nothing).
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    getattr(diffusers, pipeline).save_lora_weights(folder, unet_lora_layers=layers, weight_name=weight_name, safe_serialization=True)


def build_tiny_safety_checker(folder: Path, flags_everything: bool = False) -> None:
    """A StableDiffusionSafetyChecker-shaped CLIP checker (runner.safetyChecker.modelId)
    with its image processor. Random weights decide nothing reliably, so the
    concept thresholds decide: above any cosine (never flags) or below any
    (flags every image), so that tests see both answers."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=1000, bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(small, image_size=32, patch_size=4),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    threshold = -2.0 if flags_everything else 2.0  # cosines lie in [-1, 1]
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(crop_size=32, size=32).save_pretrained(folder)


TINY_SAFETY_CHECKER_ID = f"{TINY_ORG}/tiny-safety-checker"
TINY_STRICT_SAFETY_CHECKER_ID = f"{TINY_ORG}/tiny-safety-checker-strict"  # flags every image


def tiny_lora_id(arch: str = "sd", seed: int = 0) -> str:
    return f"{TINY_ORG}/tiny-lora-{arch}-{seed}"


def ensure_tiny_lora(model_dir: Path, arch: str = "sd", seed: int = 0) -> Path:
    return _ensure_snapshot(repo_folder(model_dir, tiny_lora_id(arch, seed)), "main", lambda folder: build_tiny_lora(folder, arch, seed))


def ensure_tiny_safety_checker(model_dir: Path, flags_everything: bool = False) -> Path:
    model_id = TINY_STRICT_SAFETY_CHECKER_ID if flags_everything else TINY_SAFETY_CHECKER_ID
    return _ensure_snapshot(repo_folder(model_dir, model_id), "main", lambda folder: build_tiny_safety_checker(folder, flags_everything))


def _ensure_snapshot(repo: Path, revision: str, builder: Callable[[Path], None]) -> Path:
    ref = repo / "refs" / revision
    version_file = repo / ".tiny-format"
    if ref.is_file() and version_file.is_file() and version_file.read_text() == TINY_FORMAT_VERSION:
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if any((snapshot / name).is_file() for name in ("config.json", "model_index.json", LORA_WEIGHT_NAME)):
            return snapshot

    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=repo))
    try:
        builder(staging)
        commit = _snapshot_commit(staging)
        snapshot = repo / "snapshots" / commit
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(snapshot)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    version_file.write_text(TINY_FORMAT_VERSION)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubediffusers-tiny-model",
        description="Build a tiny random-weight checkpoint into a Hugging Face cache directory (no download).",
    )
    parser.add_argument("--task", required=True, choices=[t.value for t in BUILDERS])
    parser.add_argument("--model-dir", required=True, type=Path, help="Hugging Face cache directory")
    parser.add_argument(
        "--arch",
        choices=list(ARCHITECTURES),
        help="architecture to build (default: the task's own); e.g. sdxl builds kubediffusers/tiny-sdxl",
    )
    args = parser.parse_args(argv)
    try:
        snapshot = ensure_tiny_model(args.task, args.model_dir, arch=args.arch)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"tiny model {tiny_model_id(args.task, args.arch)} ready at {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
