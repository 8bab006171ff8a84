"""File selection: pure functions over a repository listing, no network."""

from __future__ import annotations

import json

import pytest

from kubediffusers.runner.fetch.errors import EXIT_NO_WEIGHTS, FetchError
from kubediffusers.runner.fetch.patterns import exact_patterns, pipeline_folders, select_files

from .fetch_standin import DEFAULT_FILES, FP16_FILES, pipeline_files

FILES = pipeline_files()
INDEX = json.loads(FILES["model_index.json"])


def test_fp16_variant_takes_variant_weights_and_falls_back_per_component():
    sel = select_files(FILES, model_index=INDEX, variant="fp16")
    assert set(sel.files) == FP16_FILES
    assert sel.fallback_components == ("vae",)


def test_without_variant_only_default_safetensors():
    sel = select_files(FILES, model_index=INDEX, variant=None)
    assert set(sel.files) == DEFAULT_FILES
    assert not any(".fp16." in f for f in sel.files)


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_never_pickles_foreign_formats_root_checkpoints_or_unlisted_folders(variant):
    sel = select_files(FILES, model_index=INDEX, variant=variant)
    for f in sel.files:
        assert not f.endswith((".bin", ".ckpt", ".onnx", ".msgpack", ".h5", ".md", ".gitattributes"))
        assert "/" in f or f == "model_index.json"  # no root single-file checkpoint
        assert not f.startswith("vae_old/")
    assert set(sel.excluded) == set(FILES) - set(sel.files)


def test_sharded_and_legacy_variant_spellings_with_index():
    listing = [
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.fp16.safetensors",  # legacy spelling
        "text_encoder/model-00002-of-00002.fp16.safetensors",
        "text_encoder/model.safetensors.fp16.index.json",
        "text_encoder/model.safetensors",
    ]
    index = {"_class_name": "X", "transformer": ["diffusers", "T"], "text_encoder": ["transformers", "C"]}
    fp16 = set(select_files(listing, model_index=index, variant="fp16").files)
    assert fp16 == {
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.fp16.json",
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.fp16.safetensors",
        "text_encoder/model-00002-of-00002.fp16.safetensors",
        "text_encoder/model.safetensors.fp16.index.json",
    }
    default = set(select_files(listing, model_index=index, variant=None).files)
    assert "transformer/diffusion_pytorch_model.safetensors.index.json" in default
    assert "transformer/diffusion_pytorch_model-00002-of-00002.safetensors" in default
    assert "text_encoder/model.safetensors" in default
    assert not any("fp16" in f for f in default)


def test_variant_found_nowhere_is_an_error():
    with pytest.raises(FetchError) as err:
        select_files(FILES, model_index=INDEX, variant="bf16")
    assert err.value.reason == "VariantNotFound" and err.value.exit_code == EXIT_NO_WEIGHTS


def test_component_with_only_pickled_weights_is_an_error():
    files = dict(FILES)
    del files["vae/diffusion_pytorch_model.safetensors"]
    with pytest.raises(FetchError) as err:
        select_files(files, model_index=INDEX, variant=None)
    assert err.value.reason == "NoSafetensors" and "'vae'" in err.value.message


def test_repository_without_model_index_is_one_component_at_the_root():
    listing = [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
        "README.md",
        "sub/other.safetensors",
    ]
    assert set(select_files(listing, model_index=None, variant="fp16").files) == {"config.json", "diffusion_pytorch_model.fp16.safetensors"}
    assert set(select_files(listing, model_index=None, variant=None).files) == {"config.json", "diffusion_pytorch_model.safetensors"}
    with pytest.raises(FetchError):
        select_files(["config.json", "pytorch_model.bin"], model_index=None, variant=None)


def test_allow_patterns_replace_the_selection_but_ignored_formats_stay_out():
    sel = select_files(FILES, model_index=INDEX, variant=None, allow_patterns=["unet/*", "model_index.json"])
    assert set(sel.files) == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    }
    with pytest.raises(FetchError) as err:
        select_files(FILES, model_index=INDEX, variant=None, allow_patterns=["nothing/*"])
    assert err.value.reason == "NoMatchingFiles"


def test_ignore_patterns_replace_the_forbidden_formats():
    sel = select_files(FILES, model_index=INDEX, variant=None, allow_patterns=["unet/*"], ignore_patterns=["*.safetensors"])
    assert "unet/diffusion_pytorch_model.bin" in sel.files
    assert not any(f.endswith(".safetensors") for f in sel.files)
    extra = select_files(FILES, model_index=INDEX, variant=None, ignore_patterns=["*.bin", "*.msgpack", "tokenizer/*"])
    assert not any(f.startswith("tokenizer/") for f in extra.files)


def test_pipeline_folders_follow_diffusers_rule():
    # [null, null] (safety_checker, feature_extractor here) is a component diffusers sets to None: not a folder to fetch
    assert pipeline_folders(INDEX) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert "safety_checker" in pipeline_folders({**INDEX, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]})
    assert "x" in pipeline_folders({"x": [None, "SomeClass"]})  # only both null means "absent"


def test_null_null_components_are_not_fetched():
    assert "safety_checker/model.safetensors" in FILES  # the folder is in the repository...
    for variant in (None, "fp16"):
        assert not any(f.startswith(("safety_checker/", "feature_extractor/")) for f in select_files(FILES, model_index=INDEX, variant=variant).files)
    listed = {**INDEX, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]}
    assert "safety_checker/model.safetensors" in select_files(FILES, model_index=listed, variant=None).files


def test_exact_patterns_escape_fnmatch_characters():
    from huggingface_hub.utils import filter_repo_objects

    names = ["a/[x]*.json", "a/b?.txt", "plain.json"]
    pats = exact_patterns(names)
    others = ["a/x.json", "a/bb.txt", "a/[x]y.json"]
    assert sorted(filter_repo_objects(names + others, allow_patterns=pats)) == sorted(names)
