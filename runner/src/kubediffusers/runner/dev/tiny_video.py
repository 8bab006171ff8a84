"""Tiny random-weight checkpoints of the video families (Wan T2V, Wan I2V,
LTX-Video), registered in ``dev.tiny.ARCHITECTURES``: the real diffusers
classes at toy sizes (after diffusers' own fast tests), with a generated
T5-style tokenizer, so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _tiny_t5_tokenizer() -> Any:
    """A T5-style (SentencePiece Unigram) tokenizer over a generated vocabulary:
    every printable ASCII character alone and word-initial, ending each text
    with </s> as T5 and UMT5 do; written as tokenizer.json, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0, model_max_length=512)


TINY_T5_VOCAB = 256  # more than _tiny_t5_tokenizer's 4 + 2 x 94 tokens


def _tiny_t5_config() -> Any:
    from transformers import T5Config

    return T5Config(vocab_size=TINY_T5_VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)


def _tiny_wan_vae() -> Any:
    from diffusers import AutoencoderKLWan

    # Spatial factor 8 (three halvings), temporal factor 4: Wan's own factors.
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])


def _tiny_wan_transformer(**extra: Any) -> Any:
    from diffusers import WanTransformer3DModel

    kwargs: dict[str, Any] = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    kwargs.update(extra)
    return WanTransformer3DModel(**kwargs)


def _wan_components() -> dict[str, Any]:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=TINY_T5_VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0)
    return {
        "vae": _tiny_wan_vae(),
        "text_encoder": UMT5EncoderModel(config).eval(),
        "tokenizer": _tiny_t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),  # Wan 2.1 1.3B's flow shift at 480p
    }


def build_wan(folder: Path) -> None:
    """Wan 2.1 T2V-shaped checkpoint (WanPipeline): a 3D DiT with 1x2x2
    patches, the causal Wan VAE and a UMT5 text encoder."""
    import torch
    from diffusers import WanPipeline

    torch.manual_seed(0)
    pipe = WanPipeline(transformer=_tiny_wan_transformer(), transformer_2=None, **_wan_components())
    pipe.save_pretrained(folder, safe_serialization=True)


def build_wan_i2v(folder: Path) -> None:
    """Wan 2.1 I2V-shaped checkpoint (WanImageToVideoPipeline): the
    transformer also takes the image's latents and mask (16 + 20 channels)
    and a CLIP vision encoder's penultimate hidden states."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, image_size=32, intermediate_size=16, patch_size=4)
    )
    pipe = WanImageToVideoPipeline(
        transformer=_tiny_wan_transformer(in_channels=36, image_dim=8),
        transformer_2=None,
        image_encoder=image_encoder,
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        **_wan_components(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def build_ltx(folder: Path) -> None:
    """LTX-Video-shaped checkpoint (LTXPipeline, also loaded as
    LTXImageToVideoPipeline): a 1x1x1-patch DiT over a VAE compressing 4x in
    space and time here (32x and 8x in the real one), and a T5 text encoder."""
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import T5EncoderModel

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    pipe = LTXPipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=T5EncoderModel(_tiny_t5_config()).eval(),
        tokenizer=_tiny_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
