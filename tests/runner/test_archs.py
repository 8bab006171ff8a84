"""Shipped real-size architectures (random weights) and the --arch benchmark harness.

Real sizes are only built on the ``meta`` device here (no memory, no init);
the harness runs end to end on the toy-size ``tiny-sd``.
"""

from __future__ import annotations

import json

import diffusers
import pytest
import transformers

from kubediffusers.runner.dev import archs

REAL = ["sd-turbo", "sd15", "sdxl", "svd", "flux-schnell", "sd35-medium", "wan-t2v-1.3b", "ltx-video"]

# Published parameter counts of the denoisers (and a text/image encoder each), in millions.
EXPECTED_MILLIONS = {
    ("sd-turbo", "unet"): 865.9,
    ("sd-turbo", "text_encoder"): 340.4,  # OpenCLIP ViT-H text tower
    ("sd15", "unet"): 859.5,
    ("sd15", "text_encoder"): 123.1,  # CLIP ViT-L/14 text
    ("sdxl", "unet"): 2567.5,
    ("sdxl", "text_encoder_2"): 694.7,  # OpenCLIP bigG text, with projection
    ("svd", "unet"): 1524.6,
    ("svd", "image_encoder"): 632.1,  # CLIP ViT-H/14 vision, with projection
    ("flux-schnell", "transformer"): 11901.4,  # FLUX.1: 19 double- and 38 single-stream blocks
    ("flux-schnell", "text_encoder_2"): 4762.3,  # T5 v1.1 XXL encoder
    ("flux-schnell", "text_encoder"): 123.1,
    # The SD 3.5 Medium transformer builds to 2243M from its config; Stability publishes "2.5B" only, too round to check at 1 %.
    ("sd35-medium", "text_encoder"): 123.7,  # CLIP ViT-L/14 text, with projection
    ("sd35-medium", "text_encoder_2"): 694.7,
    ("sd35-medium", "text_encoder_3"): 4762.3,
    ("wan-t2v-1.3b", "transformer"): 1419.0,  # "1.3B": the Hub's safetensors hold 1.42B
    ("wan-t2v-1.3b", "text_encoder"): 5680.9,  # UMT5-XXL encoder
    ("wan-t2v-1.3b", "vae"): 126.9,  # Wan-VAE, 127M
    ("ltx-video", "transformer"): 1923.4,  # LTX-Video "2B" (0.9.0): 1.92B
    ("ltx-video", "text_encoder"): 4762.3,  # T5 v1.1 XXL encoder
}


def test_every_real_architecture_is_shipped() -> None:
    assert set(REAL) | {"tiny-sd", "tiny-flux"} <= set(archs.architectures())


@pytest.mark.parametrize("arch", [*REAL, "tiny-sd", "tiny-flux"])
def test_model_index_names_only_library_classes(arch: str) -> None:
    components = archs.components_of(arch)
    assert components
    for name, (library, class_name) in components.items():
        if library is None:
            assert class_name is None, name
            continue
        module = {"diffusers": diffusers, "transformers": transformers}[library]
        assert hasattr(module, class_name), f"{arch}/{name}: {library}.{class_name}"
        if "Tokenizer" in class_name:
            continue  # generated, not shipped
        folder = archs.arch_folder(arch) / name
        assert any(folder.glob("*.json")), f"{arch}/{name} has no config"
    assert hasattr(diffusers, archs.model_index(arch)["_class_name"])


@pytest.mark.parametrize("arch", REAL)
def test_real_architecture_builds_on_meta_with_published_sizes(arch: str) -> None:
    for name, (library, _) in archs.components_of(arch).items():
        component = archs.build_component(arch, name, device="meta")
        if library is None:
            assert component is None
        elif hasattr(component, "parameters"):
            # (a few scalars, e.g. SVD's temporal mix factors, are made with torch.Tensor([...]) on the CPU)
            allocated = sum(p.numel() for p in component.parameters() if not p.is_meta)
            assert allocated < 1000, f"{arch}/{name} allocated {allocated} parameters"
            expected = EXPECTED_MILLIONS.get((arch, name))
            if expected is not None:
                millions = archs.parameter_count(component) / 1e6
                assert abs(millions - expected) / expected < 0.01, f"{arch}/{name}: {millions:.1f}M, expected ~{expected}M"


def test_sizes_match_the_issue() -> None:
    def config(arch: str, name: str) -> dict:
        folder = archs.arch_folder(arch) / name
        return json.loads(next(folder.glob("*.json")).read_text())

    turbo = config("sd-turbo", "unet")
    assert (turbo["attention_head_dim"], turbo["cross_attention_dim"], turbo["use_linear_projection"]) == ([5, 10, 20, 20], 1024, True)
    assert config("sd15", "unet")["cross_attention_dim"] == 768
    xl = config("sdxl", "unet")
    assert (xl["transformer_layers_per_block"], xl["addition_time_embed_dim"], xl["projection_class_embeddings_input_dim"]) == ([1, 2, 10], 256, 2816)
    assert config("sdxl", "vae")["scaling_factor"] == 0.13025
    assert config("sdxl", "text_encoder_2")["projection_dim"] == 1280
    assert config("svd", "image_encoder")["patch_size"] == 14
    wan = config("wan-t2v-1.3b", "transformer")
    assert (wan["num_layers"], wan["num_attention_heads"] * wan["attention_head_dim"], wan["ffn_dim"], wan["patch_size"]) == (30, 1536, 8960, [1, 2, 2])
    ltx = config("ltx-video", "transformer")
    assert (ltx["num_layers"], ltx["num_attention_heads"] * ltx["attention_head_dim"], ltx["in_channels"]) == (28, 2048, 128)


def test_random_pipeline_assembles_on_meta() -> None:
    pipe = archs.build_random_pipeline("sdxl", device="meta")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.tokenizer.model_max_length == 77


@pytest.mark.parametrize(("arch", "pipeline"), [("wan-t2v-1.3b", "WanPipeline"), ("ltx-video", "LTXPipeline")])
def test_video_pipelines_assemble_on_meta_with_their_tokenizers(arch: str, pipeline: str) -> None:
    pipe = archs.build_random_pipeline(arch, device="meta")
    assert type(pipe).__name__ == pipeline
    assert pipe.tokenizer("a boat").input_ids[-1] == pipe.tokenizer.eos_token_id  # T5-style: ends with </s>


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        archs.random_model_id("sd9")


def test_the_bench_takes_each_architectures_native_size_and_the_familys_gpu_dtype() -> None:
    from kubediffusers.runner.dev.bench.arch import native_size
    from kubediffusers.runner.families import family_of

    sizes = {arch: native_size(archs.arch_folder(arch)) for arch in ("sd-turbo", "sdxl", "flux-schnell", "sd35-medium")}
    assert sizes == {"sd-turbo": 512, "sdxl": 1024, "flux-schnell": 1024, "sd35-medium": 1024}
    # Random real-size checkpoints are saved in the family's GPU dtype: FLUX's T5 overflows float16.
    assert [getattr(family_of(archs.arch_folder(a)), "gpu_dtype", None) for a in ("sdxl", "flux-schnell", "tiny-flux")] == ["float16", "bfloat16", "bfloat16"]
