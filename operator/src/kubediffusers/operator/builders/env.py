"""The runner's environment: ONE function, used by the operator and ``kubediffusers local``.

Entries are Kubernetes EnvVar dicts ({name, value} or {name, valueFrom}); ``local.py``
turns the same list into a process environment, so what runs on a laptop is what
runs in the cluster.
"""

from __future__ import annotations

import json
from typing import Any

from .. import names
from ..pipeline import Pipeline
from ..settings import OperatorSettings
from ..spec import OptimizationsSpec, SecretKeyRef

PREFIX = "KUBEDIFFUSERS_"
AUTH_TOKEN_VAR = f"{PREFIX}AUTH_TOKEN"
HF_TOKEN_VAR = "HF_TOKEN"
HF_ENDPOINT_VAR = "HF_ENDPOINT"
# What the fetcher reads (a subset of the runner's environment, plus the Hub token).
FETCH_VARS = frozenset(f"{PREFIX}{n}" for n in ("TASK", "MODEL_ID", "MODEL_REVISION", "MODEL_VARIANT", "MODEL_DIR", "LOG_LEVEL", "TINY_VAE_ID"))
# huggingface_hub and hf_xet keep state under HF_HOME; the root filesystem is read-only.
HF_HOME = "/tmp/hf-home"

EnvVar = dict[str, Any]


def _value(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def _secret(name: str, ref: SecretKeyRef) -> EnvVar:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def build_runner_env(pipeline: Pipeline, settings: OperatorSettings) -> list[EnvVar]:
    """Environment of the runner container (names as in the runner's settings.py)."""
    spec = pipeline.spec
    runner = spec.runner
    env: list[EnvVar] = [
        _value(f"{PREFIX}TASK", spec.task.value),
        _value(f"{PREFIX}MODEL_ID", spec.model.id),
        _value(f"{PREFIX}MODEL_REVISION", spec.model.revision),
    ]
    if spec.model.variant:
        env.append(_value(f"{PREFIX}MODEL_VARIANT", spec.model.variant))
    env += [
        _value(f"{PREFIX}DTYPE", spec.model.dtype or "auto"),
        _value(f"{PREFIX}MODEL_DIR", names.MODEL_DIR),
        _value(f"{PREFIX}DEVICE", "auto"),
        _value(f"{PREFIX}HOST", "0.0.0.0"),
        _value(f"{PREFIX}PORT", names.RUNNER_PORT),
        _value(f"{PREFIX}LOG_LEVEL", runner.log_level),
        # The runner loads from the cache only; this makes the Hub library agree.
        _value("HF_HUB_OFFLINE", "1"),
    ]
    optional = {
        "MAX_QUEUE_SIZE": runner.max_queue_size,
        "REQUEST_TIMEOUT_SECONDS": runner.request_timeout_seconds,
        "MAX_PIXELS": runner.limits.max_pixels,
        "MAX_STEPS": runner.limits.max_steps,
        "MAX_IMAGES_PER_REQUEST": runner.limits.max_images_per_request,
        "MAX_UPLOAD_BYTES": runner.limits.max_upload_bytes,
        "MAX_BATCH_SIZE": runner.max_batch_size,
        "BATCH_WINDOW_MS": runner.batch_window_ms,
    }
    env += [_value(f"{PREFIX}{key}", value) for key, value in optional.items() if value is not None]
    if runner.compatibility != "none":
        env.append(_value(f"{PREFIX}COMPATIBILITY", runner.compatibility))
    if runner.cors_allowed_origins:
        # pydantic-settings reads a list setting as JSON.
        env.append(_value(f"{PREFIX}CORS_ALLOWED_ORIGINS", json.dumps(runner.cors_allowed_origins)))
    env += _optimization_env(runner.optimizations)
    if runner.auth_secret_ref is not None:
        env.append(_secret(AUTH_TOKEN_VAR, runner.auth_secret_ref))
    return _override(env, [_value(e.name, e.value) for e in runner.env])


def _optimization_env(opt: OptimizationsSpec) -> list[EnvVar]:
    """Only options that differ from the runner's defaults, so the pod spec stays short."""
    values: dict[str, object] = {
        "ATTENTION": opt.attention if opt.attention != "sdpa" else None,
        "CHANNELS_LAST": opt.channels_last or None,
        "FUSE_QKV": opt.fuse_qkv or None,
        "COMPILE_UNET": opt.compile.unet or None,
        "COMPILE_VAE": opt.compile.vae or None,
        "COMPILE_MODE": opt.compile.mode if opt.compile.mode != "default" else None,
        "DEEPCACHE_INTERVAL": opt.deep_cache_interval or None,
        "TINY_VAE_ID": opt.tiny_vae,
        "VAE_SLICING": opt.vae_slicing or None,
        "VAE_TILING": opt.vae_tiling or None,
        "CPU_OFFLOAD": opt.cpu_offload if opt.cpu_offload != "none" else None,
    }
    return [_value(f"{PREFIX}{k}", str(v).lower() if isinstance(v, bool) else v) for k, v in values.items() if v is not None]


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
