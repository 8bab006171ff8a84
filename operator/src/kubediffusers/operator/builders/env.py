"""The runner's environment: ONE function, used by the operator and ``kubediffusers local``.

Entries are Kubernetes EnvVar dicts ({name, value} or {name, valueFrom}); ``local.py``
turns the same list into a process environment, so what runs on a laptop is what
runs in the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from .. import names
from ..pipeline import Pipeline
from ..settings import OperatorSettings
from ..shared_jobs import jobs_settings
from ..spec import InferencePipelineSpec, SecretKeyRef

PREFIX = "KUBEDIFFUSERS_"
AUTH_TOKEN_VAR = f"{PREFIX}AUTH_TOKEN"
HF_TOKEN_VAR = "HF_TOKEN"
HF_ENDPOINT_VAR = "HF_ENDPOINT"
# What the fetcher reads (a subset of the runner's environment, plus the Hub token).
# The add-ons (LORAS, SAFETY_CHECKER_*) are fetched with the model.
FETCH_VARS = frozenset(
    f"{PREFIX}{n}"
    for n in (
        *("TASK", "MODEL_ID", "MODEL_REVISION", "MODEL_VARIANT", "MODEL_DIR", "LOG_LEVEL", "TINY_VAE_ID"),
        *("LORAS", "SAFETY_CHECKER_ENABLED", "SAFETY_CHECKER_MODEL_ID"),
    )
)
# huggingface_hub and hf_xet keep state under HF_HOME; the root filesystem is read-only.
HF_HOME = "/tmp/hf-home"

EnvVar = dict[str, Any]


def _value(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def _secret(name: str, ref: SecretKeyRef) -> EnvVar:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


# The runner-facing groups of the spec and the prefix their fields take in the
# runner's settings, so that a CR field and its setting share one name
# (spec.runner.limits.maxPixels -> KUBEDIFFUSERS_MAX_PIXELS,
# spec.model.id -> KUBEDIFFUSERS_MODEL_ID, compile.unet -> KUBEDIFFUSERS_COMPILE_UNET).
# Of the spec's own fields only ``task`` is a runner setting; in the groups,
# every field is one but those in NOT_SETTINGS (tokens, the image, extra env).
RUNNER_FACING: dict[tuple[str, ...], str] = {
    ("model",): "model_",
    ("runner",): "",
    ("runner", "limits"): "",
    ("runner", "optimizations"): "",
    ("runner", "optimizations", "compile"): "compile_",
    ("runner", "safety_checker"): "safety_checker_",
}
TOP_LEVEL_SETTINGS = frozenset({"task", "loras"})
NOT_SETTINGS = frozenset({"token_secret_ref", "image", "auth_secret_ref", "env"})
# Written even at their default, so that a pod spec names what it serves.
SPELLED_OUT = frozenset({"task", "model_id", "model_revision", "log_level"})


def runner_facing(model: BaseModel, path: tuple[str, ...] = ()) -> Iterator[tuple[str, object, object]]:
    """(runner setting, value, CR default) of each runner-facing field, in spec order."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if (*path, name) in RUNNER_FACING:
            yield from runner_facing(value, (*path, name))
        elif name in TOP_LEVEL_SETTINGS if not path else name not in NOT_SETTINGS:
            yield RUNNER_FACING.get(path, "") + name, value, info.get_default(call_default_factory=True)


def runner_settings(spec: InferencePipelineSpec) -> dict[str, object]:
    """The runner-facing spec flattened to runner setting names (snake_case).

    A field at its default is left out (the CR's defaults are the runner's:
    tests/runner/test_settings_contract.py), except ``SPELLED_OUT`` ones; so is
    an unset (None) one, for which the runner's own default applies.
    """
    return {setting: value for setting, value, default in runner_facing(spec) if value is not None and (setting in SPELLED_OUT or value != default)}


def setting_value(value: object) -> str:
    if isinstance(value, list):  # a list of objects (spec.loras): JSON, with the runner's snake_case names
        return json.dumps([v.model_dump(mode="json", exclude_none=True) if isinstance(v, BaseModel) else v for v in value])
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_runner_env(pipeline: Pipeline, settings: OperatorSettings, claim_modes: frozenset[str] | None = None) -> list[EnvVar]:
    """Environment of the runner container: the runner-facing spec, then what the operator decides.

    ``claim_modes``: the access modes of the existingClaim, when known (they decide shared jobs).
    """
    spec = pipeline.spec
    decided = {"shared_jobs"}  # resolved from the layout and the claim (shared_jobs.py), not copied
    env = [_value(f"{PREFIX}{name.upper()}", setting_value(value)) for name, value in runner_settings(spec).items() if name not in decided]
    env += [_value(f"{PREFIX}{name.upper()}", value) for name, value in jobs_settings(pipeline.name, spec, claim_modes).items()]
    env += [
        _value(f"{PREFIX}MODEL_DIR", names.MODEL_DIR),
        _value(f"{PREFIX}DEVICE", "auto"),
        _value(f"{PREFIX}HOST", "0.0.0.0"),
        _value(f"{PREFIX}PORT", names.RUNNER_PORT),
        # The runner loads from the cache only; this makes the Hub library agree.
        _value("HF_HUB_OFFLINE", "1"),
    ]
    if spec.runner.auth_secret_ref is not None:
        env.append(_secret(AUTH_TOKEN_VAR, spec.runner.auth_secret_ref))
    return _override(env, [_value(e.name, e.value) for e in spec.runner.env])


def build_fetch_env(pipeline: Pipeline, settings: OperatorSettings) -> list[EnvVar]:
    """Environment of the fetch init container: the model part of the runner's, plus Hub access."""
    env = [e for e in build_runner_env(pipeline, settings) if e["name"] in FETCH_VARS]
    env.append(_value("HF_HOME", HF_HOME))
    if pipeline.spec.model.token_secret_ref is not None:
        # The Hub token reaches the fetcher only; the serving container never needs it.
        env.append(_secret(HF_TOKEN_VAR, pipeline.spec.model.token_secret_ref))
    if settings.hf_endpoint:
        env.append(_value(HF_ENDPOINT_VAR, settings.hf_endpoint))
    return env


def _override(env: list[EnvVar], overrides: list[EnvVar]) -> list[EnvVar]:
    """Later entries replace earlier ones of the same name, keeping the first position."""
    result: dict[str, EnvVar] = {e["name"]: e for e in env}
    for entry in overrides:
        result[entry["name"]] = entry
    return list(result.values())
