"""The fetcher's file selection on the listings of the DiT families' published
repositories (file names as on the Hub): transformer/, the second and third
text encoders and tokenizers, sharded safetensors with their index, and
nothing the runner does not load (root single-file checkpoints, ComfyUI
folders, pickles)."""

from __future__ import annotations

from kubediffusers.runner.fetch.patterns import select_files

FLUX_SCHNELL_INDEX = {
    "_class_name": "FluxPipeline",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

# black-forest-labs/FLUX.1-schnell
FLUX_SCHNELL_FILES = [
    ".gitattributes",
    "README.md",
    "ae.safetensors",
    "flux1-schnell.safetensors",
    "model_index.json",
    "schnell_grid.jpeg",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model-00001-of-00002.safetensors",
    "text_encoder_2/model-00002-of-00002.safetensors",
    "text_encoder_2/model.safetensors.index.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/spiece.model",
    "tokenizer_2/tokenizer.json",
    "tokenizer_2/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
    "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def test_flux_schnell_takes_the_diffusers_layout_and_skips_the_single_files() -> None:
    selection = select_files(FLUX_SCHNELL_FILES, model_index=FLUX_SCHNELL_INDEX, variant=None)
    chosen = set(selection.files)
    assert {
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
        "text_encoder_2/model.safetensors.index.json",
        "text_encoder_2/model-00002-of-00002.safetensors",
        "tokenizer_2/spiece.model",
        "tokenizer_2/tokenizer.json",
        "tokenizer/vocab.json",
    } <= chosen
    # 12 GB of root checkpoints, the ComfyUI-style VAE, and what is not a model.
    assert not chosen & {"flux1-schnell.safetensors", "ae.safetensors", "README.md", "schnell_grid.jpeg", ".gitattributes"}
    assert len(chosen) == len(FLUX_SCHNELL_FILES) - 5


SD35_INDEX = {
    "_class_name": "StableDiffusion3Pipeline",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_3": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "tokenizer_3": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "SD3Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "image_encoder": [None, None],
    "feature_extractor": [None, None],
}

# stabilityai/stable-diffusion-3.5-medium
SD35_FILES = [
    "sd3.5_medium.safetensors",
    "text_encoders/clip_g.safetensors",
    "text_encoders/clip_l.safetensors",
    "text_encoders/t5xxl_fp16.safetensors",
    "text_encoders/t5xxl_fp8_e4m3fn.safetensors",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.fp16.safetensors",
    "text_encoder_2/model.safetensors",
    "text_encoder_3/config.json",
    "text_encoder_3/model-00001-of-00002.fp16.safetensors",
    "text_encoder_3/model-00002-of-00002.fp16.safetensors",
    "text_encoder_3/model-00001-of-00002.safetensors",
    "text_encoder_3/model-00002-of-00002.safetensors",
    "text_encoder_3/model.safetensors.index.fp16.json",
    "text_encoder_3/model.safetensors.index.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/vocab.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_3/spiece.model",
    "tokenizer_3/tokenizer.json",
    "tokenizer_3/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def test_sd35_takes_three_text_encoders_and_one_variant() -> None:
    default = set(select_files(SD35_FILES, model_index=SD35_INDEX, variant=None).files)
    assert {"text_encoder_3/model.safetensors.index.json", "text_encoder_3/model-00001-of-00002.safetensors", "tokenizer_3/spiece.model"} <= default
    assert not any(".fp16." in f for f in default)
    assert not any(f.startswith("text_encoders/") or f == "sd3.5_medium.safetensors" for f in default)

    fp16 = select_files(SD35_FILES, model_index=SD35_INDEX, variant="fp16")
    chosen = set(fp16.files)
    assert {
        "text_encoder_3/model.safetensors.index.fp16.json",
        "text_encoder_3/model-00002-of-00002.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
    } <= chosen
    assert "text_encoder_3/model-00001-of-00002.safetensors" not in chosen  # the default copy is not fetched twice
    # Components without fp16 files fall back to their default weights.
    assert set(fp16.fallback_components) == {"transformer", "vae"}


def test_z_image_takes_the_qwen_tokenizer_and_sharded_encoder() -> None:
    index = {
        "_class_name": "ZImagePipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    # Tongyi-MAI/Z-Image-Turbo
    files = [
        "model_index.json",
        "assets/showcase.jpg",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/generation_config.json",
        "text_encoder/model-00001-of-00003.safetensors",
        "text_encoder/model-00002-of-00003.safetensors",
        "text_encoder/model-00003-of-00003.safetensors",
        "text_encoder/model.safetensors.index.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
        "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    chosen = set(select_files(files, model_index=index, variant=None).files)
    assert chosen == set(files) - {"assets/showcase.jpg"}
