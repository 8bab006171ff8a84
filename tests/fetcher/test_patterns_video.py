"""File selection for the video families' repositories (Wan 2.1/2.2, LTX-Video):
transformer/, UMT5/T5 text encoders sharded with their index, SentencePiece
tokenizers, Wan I2V's CLIP image encoder and processor; nothing else."""

from __future__ import annotations

import pytest

from kubediffusers.runner.fetch.errors import FetchError
from kubediffusers.runner.fetch.patterns import select_files

T5_TOKENIZER = ["tokenizer/special_tokens_map.json", "tokenizer/spiece.model", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json"]
UMT5_SHARDS = [f"text_encoder/model-0000{i}-of-00005.safetensors" for i in range(1, 6)] + ["text_encoder/model.safetensors.index.json"]
EXTRAS = [".gitattributes", "README.md", "LICENSE.txt", "assets/comp_effic.png", "examples/i2v_input.JPG"]

WAN_T2V_INDEX = {
    "_class_name": "WanPipeline",
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers
WAN_T2V = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    *UMT5_SHARDS,
    *T5_TOKENIZER,
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]

WAN_I2V_INDEX = {
    **WAN_T2V_INDEX,
    "_class_name": "WanImageToVideoPipeline",
    "image_encoder": ["transformers", "CLIPVisionModel"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
}
# Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: a sharded transformer and the CLIP image encoder.
TRANSFORMER_SHARDS = [f"transformer/diffusion_pytorch_model-{i:05d}-of-00014.safetensors" for i in range(1, 15)]
WAN_I2V = [
    *[f for f in WAN_T2V if not f.startswith("transformer/diffusion_pytorch_model")],
    *TRANSFORMER_SHARDS,
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "image_encoder/config.json",
    "image_encoder/model.safetensors",
    "image_processor/preprocessor_config.json",
]

# Wan-AI/Wan2.2-T2V-A14B-Diffusers: two experts (transformer, transformer_2).
WAN22_INDEX = {**WAN_T2V_INDEX, "transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.875}
WAN22 = [
    *[f for f in WAN_I2V if not f.startswith("image_")],
    *[f.replace("transformer/", "transformer_2/") for f in WAN_I2V if f.startswith("transformer/")],
]

LTX_INDEX = {
    "_class_name": "LTXPipeline",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLLTXVideo"],
}
# Lightricks/LTX-Video: diffusers folders beside the original single-file checkpoints.
LTX = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    *[f"text_encoder/model-0000{i}-of-00004.safetensors" for i in range(1, 5)],
    "text_encoder/model.safetensors.index.json",
    *T5_TOKENIZER,
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
LTX_ROOT = ["ltx-video-2b-v0.9.safetensors", "ltxv-13b-0.9.7-dev.safetensors", "ltx-video-2b-v0.9.1.license.txt", "media/ltx-video_example_00001.gif"]


@pytest.mark.parametrize(
    ("listing", "index"),
    [(WAN_T2V, WAN_T2V_INDEX), (WAN_I2V, WAN_I2V_INDEX), (WAN22, WAN22_INDEX), (LTX, LTX_INDEX)],
    ids=["wan2.1-t2v", "wan2.1-i2v", "wan2.2-t2v-a14b", "ltx-video"],
)
def test_every_loaded_file_and_nothing_else(listing: list[str], index: dict) -> None:
    extras = EXTRAS + (LTX_ROOT if index is LTX_INDEX else [])
    sel = select_files(listing + extras, model_index=index, variant=None)
    assert set(sel.files) == set(listing)
    assert set(sel.excluded) == set(extras)


def test_sharded_text_encoder_and_transformer_come_with_their_index() -> None:
    files = set(select_files(WAN_I2V, model_index=WAN_I2V_INDEX, variant=None).files)
    assert "text_encoder/model.safetensors.index.json" in files and set(UMT5_SHARDS) <= files
    assert "transformer/diffusion_pytorch_model.safetensors.index.json" in files and set(TRANSFORMER_SHARDS) <= files
    assert {"tokenizer/spiece.model", "tokenizer/tokenizer.json"} <= files


def test_wan22_i2v_without_an_image_encoder_skips_its_folder() -> None:
    # Wan 2.2 I2V A14B conditions on the image's latents only: image_encoder is [null, null].
    index = {**WAN22_INDEX, "_class_name": "WanImageToVideoPipeline", "image_encoder": [None, None], "image_processor": [None, None]}
    stale = ["image_encoder/config.json", "image_encoder/model.safetensors"]
    sel = select_files(WAN22 + stale, model_index=index, variant=None)
    assert not any(f.startswith("image_encoder/") for f in sel.files)


def test_a_pickled_only_umt5_encoder_is_refused() -> None:
    listing = [f for f in WAN_T2V if not f.startswith("text_encoder/model")] + ["text_encoder/pytorch_model.bin"]
    with pytest.raises(FetchError, match="component 'text_encoder' has no safetensors weights"):
        select_files(listing, model_index=WAN_T2V_INDEX, variant=None)
