"""One name and one rule per setting, from the InferencePipeline CR to the runner.

The operator cannot import the runner (no torch in its image), so it keeps its
own copies of the model patterns and flattens the runner-facing spec by name;
these tests hold the two distributions to one contract.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from kubediffusers.operator import spec as operator_spec
from kubediffusers.operator.builders.env import NOT_SETTINGS, RUNNER_FACING, build_runner_env, runner_facing
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.runner import settings as runner_settings
from kubediffusers.runner.fetch.config import FetchSettings
from kubediffusers.runner.settings import RunnerSettings


def runner_facing_fields() -> list[tuple[str, str, Any]]:
    """(runner setting, CR default) of every runner-facing field of a default spec."""
    spec = operator_spec.InferencePipelineSpec(task="text-to-image", model={"id": "a/b"})
    return [(setting, default) for setting, _, default in runner_facing(spec)]


LEAVES = runner_facing_fields()


@pytest.mark.parametrize(("setting", "default"), LEAVES, ids=[leaf[0] for leaf in LEAVES])
def test_every_runner_facing_field_is_a_runner_setting_with_the_same_default(setting: str, default: Any) -> None:
    assert setting in RunnerSettings.model_fields, f"the spec field of {setting} has no runner setting of that name"
    runner_default = RunnerSettings.model_fields[setting].get_default(call_default_factory=True)
    if default is not None:  # unset (None) in the CR: the runner's default applies
        assert default == runner_default, f"the spec defaults {setting} to {default!r}, the runner to {runner_default!r}"


def test_every_spec_group_is_runner_facing_or_not_a_setting() -> None:
    """A new group under spec.model or spec.runner must be listed in RUNNER_FACING (or be no setting)."""
    for path in RUNNER_FACING:
        cls: Any = operator_spec.InferencePipelineSpec
        for name in path:
            cls = cls.model_fields[name].annotation
        for name, info in cls.model_fields.items():
            nested = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
            assert not nested or (*path, name) in RUNNER_FACING or name in NOT_SETTINGS, (path, name)


def test_the_leaves_cover_the_spec_groups() -> None:
    settings = {leaf[0] for leaf in LEAVES}
    assert {
        "task",
        "model_id",
        "model_revision",
        "model_variant",
        "model_dtype",
        "log_level",
        "max_pixels",
        "compile_unet",
        "deepcache_interval",
        "tiny_vae_id",
    } <= settings


def full_spec() -> dict[str, Any]:
    """A spec with every runner-facing field away from its default."""
    return {
        "task": "image-to-image",
        "model": {"id": "org/model", "revision": "v2", "variant": "fp16", "dtype": "bfloat16"},
        "runner": {
            "logLevel": "debug",
            "compatibility": "livepeer",
            "corsAllowedOrigins": ["https://app.example"],
            "maxQueueSize": 7,
            "requestTimeoutSeconds": 12.5,
            "drainSeconds": 40,
            "maxBatchSize": 4,
            "batchWindowMs": 15,
            "outputFormat": "webp",
            "outputQuality": 70,
            "sharedJobs": True,
            "limits": {"maxPixels": 65536, "maxSteps": 20, "maxImagesPerRequest": 3, "maxUploadBytes": 4096, "maxVideoFrames": 81},
            "optimizations": {
                "attention": "default",
                "channelsLast": True,
                "fuseQkv": True,
                "compile": {"unet": True, "vae": True, "mode": "reduce-overhead", "regional": False, "batchSizes": [1, 2, 4], "sizes": ["256x256", "256x128"]},
                "deepcacheInterval": 2,
                "tinyVaeId": "madebyollin/taesd",
                "vaeSlicing": True,
                "vaeTiling": True,
                "promptCacheSize": 8,
                "textEncoderOffload": True,
                "transformerCache": "taylorseer",
            },
            "safetyChecker": {"enabled": True, "modelId": "org/checker", "policy": "blank"},
        },
    }


def test_every_runner_facing_field_reaches_the_runner_with_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "p", "namespace": "ns"}, "spec": full_spec()}
    pipeline = Pipeline.from_manifest(doc)
    for entry in build_runner_env(pipeline, OperatorSettings()):
        monkeypatch.setenv(entry["name"], entry["value"])
    runner = runner_settings.load_settings()
    flat = {setting: value for setting, value, _ in runner_facing(pipeline.spec)}
    # cpu_offload cannot be combined with compile, loras not with fuseQkv, compile.textEncoder not with
    # textEncoderOffload, which the full spec sets (loras: below; compile.textEncoder: the next test).
    skipped = {"cpu_offload", "loras", "compile_text_encoder"}
    for setting, value in flat.items():
        if setting not in skipped:
            assert getattr(runner, setting) == value, setting
            assert value != RunnerSettings.model_fields[setting].default, f"{setting}: the full spec should move every field"


def field_pattern(model: type[BaseModel], name: str) -> str:
    patterns = [m.pattern for m in model.model_fields[name].metadata if getattr(m, "pattern", None)]
    assert len(patterns) == 1, (model, name)
    return patterns[0]


def test_compile_text_encoder_reaches_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = full_spec()
    spec["runner"]["optimizations"] |= {"textEncoderOffload": False, "compile": {"textEncoder": True}}
    doc = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}
    env = {entry["name"]: entry["value"] for entry in build_runner_env(Pipeline.from_manifest(doc), OperatorSettings())}
    assert env["KUBEDIFFUSERS_COMPILE_TEXT_ENCODER"] == "true"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runner_settings.load_settings().compile_text_encoder


def test_compile_size_rules_are_one_rule_in_operator_and_runner() -> None:
    assert operator_spec.COMPILE_SIZE_PATTERN == runner_settings.COMPILE_SIZE_PATTERN
    assert (operator_spec.MIN_SIDE, operator_spec.MAX_SIDE, operator_spec.SIDE_STEP) == (
        runner_settings.MIN_SIDE,
        runner_settings.MAX_SIDE,
        runner_settings.SIDE_STEP,
    )
    assert operator_spec.SIZED_TASKS == runner_settings.SIZED_TASKS
    assert RunnerSettings.model_fields["max_pixels"].default == operator_spec.RUNNER_MAX_PIXELS


@pytest.mark.parametrize(
    ("task", "sizes", "max_pixels"),
    [
        ("text-to-image", ["512x512", "512x512"], None),
        ("text-to-image", ["512x500"], None),
        ("text-to-image", ["8200x8"], None),
        ("text-to-image", ["2048x2048"], None),
        ("text-to-image", ["768x512"], 262144),
        ("text-to-image", ["512 x 512"], None),
        ("upscale", ["512x512"], None),
    ],
)
def test_compile_sizes_the_runner_refuses_the_crd_model_refuses(task: str, sizes: list[str], max_pixels: int | None) -> None:
    limits = {} if max_pixels is None else {"maxPixels": max_pixels}
    with pytest.raises(ValidationError):
        operator_spec.InferencePipelineSpec.model_validate(
            {"task": task, "model": {"id": "a/b"}, "runner": {"limits": limits, "optimizations": {"compile": {"vae": True, "sizes": sizes}}}}
        )
    with pytest.raises(ValidationError):
        RunnerSettings(task=task, model_id="a/b", compile_vae=True, compile_sizes=sizes, **({} if max_pixels is None else {"max_pixels": max_pixels}))


@pytest.mark.parametrize("kind", ["MODEL_ID", "REVISION", "VARIANT"])
def test_model_patterns_are_one_rule_in_operator_runner_and_fetcher(kind: str) -> None:
    assert getattr(operator_spec, f"{kind}_PATTERN") == getattr(runner_settings, f"{kind}_PATTERN")


def test_the_runner_and_the_fetcher_use_the_shared_patterns() -> None:
    rules = {
        "model_id": runner_settings.MODEL_ID_PATTERN,
        "model_revision": runner_settings.REVISION_PATTERN,
        "model_variant": runner_settings.VARIANT_PATTERN,
        "tiny_vae_id": runner_settings.MODEL_ID_PATTERN,
    }
    for name, pattern in rules.items():
        assert field_pattern(RunnerSettings, name) == pattern
        assert field_pattern(FetchSettings, name) == pattern
    assert field_pattern(operator_spec.ModelSpec, "id") == runner_settings.MODEL_ID_PATTERN
    assert field_pattern(operator_spec.ModelSpec, "revision") == runner_settings.REVISION_PATTERN
    assert field_pattern(operator_spec.ModelSpec, "variant") == runner_settings.VARIANT_PATTERN
    assert field_pattern(operator_spec.OptimizationsSpec, "tiny_vae_id") == runner_settings.MODEL_ID_PATTERN


@pytest.mark.parametrize("variant", ["fp16.x", "fp 16", "../fp16", "fp16/"])
def test_a_variant_the_fetcher_refuses_is_refused_by_the_crd_model(variant: str) -> None:
    with pytest.raises(ValidationError):
        operator_spec.ModelSpec(id="a/b", variant=variant)
    with pytest.raises(ValidationError):
        RunnerSettings(task="text-to-image", model_id="a/b", model_variant=variant)
    assert not re.match(runner_settings.VARIANT_PATTERN, variant)


@pytest.mark.parametrize("value", ["fp16", "bf16", "non_ema-1"])
def test_plain_variants_pass_everywhere(value: str) -> None:
    operator_spec.ModelSpec(id="a/b", variant=value)
    RunnerSettings(task="text-to-image", model_id="a/b", model_variant=value)


def test_the_crd_patterns_are_ascii_as_kubernetes_reads_them() -> None:
    # Python's \w matches any letter; Kubernetes' (RE2's) only ASCII ones.
    for kind in ("MODEL_ID", "REVISION", "VARIANT"):
        assert r"\w" not in getattr(operator_spec, f"{kind}_PATTERN")
    with pytest.raises(ValidationError):
        operator_spec.ModelSpec(id="org/modèle")


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_TASK", "text-to-image")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_ID", "a/b")
    for name in ("MODEL_VARIANT", "TINY_VAE_ID", "AUTH_TOKEN", "MAX_PIXELS", "MODEL_REVISION"):
        monkeypatch.setenv(f"KUBEDIFFUSERS_{name}", "")
    s = runner_settings.load_settings()
    assert s.model_variant is None and s.tiny_vae_id is None and s.auth_token is None
    assert s.max_pixels == RunnerSettings.model_fields["max_pixels"].default and s.model_revision == "main"


LORAS = [
    {"name": "pixel", "id": "nerijs/pixel-art-xl", "revision": "v1", "weightName": "pixel-art-xl.safetensors", "scale": 0.8},
    {"name": "plain", "id": "org/lora"},
]


def test_loras_reach_the_runner_and_the_fetcher_with_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"task": "text-to-image", "model": {"id": "org/model"}, "loras": LORAS, "runner": {"safetyChecker": {"enabled": True}}}
    doc = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}
    pipeline = Pipeline.from_manifest(doc)
    env = {e["name"]: e["value"] for e in build_runner_env(pipeline, OperatorSettings())}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = runner_settings.load_settings()
    fetcher = FetchSettings()
    want = [runner_settings.LoraAdapter(name="pixel", id="nerijs/pixel-art-xl", revision="v1", weight_name="pixel-art-xl.safetensors", scale=0.8)]
    want.append(runner_settings.LoraAdapter(name="plain", id="org/lora"))
    assert runner.loras == fetcher.loras == want
    assert runner.safety_checker_enabled and fetcher.safety_checker_enabled
    assert runner.safety_checker_model_id == fetcher.safety_checker_model_id == operator_spec.SAFETY_CHECKER_ID == runner_settings.SAFETY_CHECKER_ID
    assert [(a.kind, a.repo_id, a.revision, a.files) for a in fetcher.add_ons()] == [
        ("LoRA adapter", "nerijs/pixel-art-xl", "v1", ("pixel-art-xl.safetensors",)),
        ("LoRA adapter", "org/lora", "main", None),
        ("safety checker", runner_settings.SAFETY_CHECKER_ID, "main", None),
    ]


def test_adapter_rules_are_one_rule_in_operator_and_runner() -> None:
    assert field_pattern(operator_spec.LoraSpec, "name") == runner_settings.ADAPTER_NAME_PATTERN == operator_spec.ADAPTER_NAME_PATTERN
    assert field_pattern(operator_spec.LoraSpec, "weight_name") == runner_settings.WEIGHT_NAME_PATTERN == operator_spec.WEIGHT_NAME_PATTERN
    assert field_pattern(operator_spec.LoraSpec, "id") == field_pattern(runner_settings.LoraAdapter, "id") == runner_settings.MODEL_ID_PATTERN
    assert operator_spec.MAX_LORA_SCALE == runner_settings.MAX_LORA_SCALE


@pytest.mark.parametrize(
    "lora",
    [
        {"name": "x", "id": "a/b", "weightName": "model.bin"},  # safetensors only
        {"name": "x", "id": "a/b", "weightName": "../other/x.safetensors"},
        {"name": "-x", "id": "a/b"},
        {"name": "x", "id": "a/b", "scale": -1},
        {"name": "x", "id": "a/b", "scale": 11},
    ],
)
def test_a_bad_lora_is_refused_by_the_crd_model_and_the_runner(lora: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        operator_spec.LoraSpec.model_validate(lora)
    with pytest.raises(ValidationError):
        runner_settings.LoraAdapter.model_validate({runner_key(k): v for k, v in lora.items()})


def runner_key(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def test_adapter_names_are_unique_and_loras_exclude_fused_projections() -> None:
    base = {"task": "text-to-image", "model": {"id": "a/b"}}
    with pytest.raises(ValidationError, match="names must be unique"):
        operator_spec.InferencePipelineSpec.model_validate({**base, "loras": [{"name": "x", "id": "a/b"}, {"name": "x", "id": "a/c"}]})
    with pytest.raises(ValidationError, match="fuseQkv"):
        operator_spec.InferencePipelineSpec.model_validate({**base, "loras": LORAS, "runner": {"optimizations": {"fuseQkv": True}}})
    with pytest.raises(ValidationError, match="names must be unique"):
        RunnerSettings(task="text-to-image", model_id="a/b", loras=[{"name": "x", "id": "a/b"}, {"name": "x", "id": "a/c"}])
    with pytest.raises(ValidationError, match="fuse_qkv"):
        RunnerSettings(task="text-to-image", model_id="a/b", loras=[{"name": "x", "id": "a/b"}], fuse_qkv=True)
