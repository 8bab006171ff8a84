"""Operator configuration: environment variables prefixed ``KUBEDIFFUSERS_OPERATOR_``.

The Helm chart sets these on the operator Deployment; ``kubediffusers render`` and
``kubediffusers local`` read the same ones, so a default image is defined once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .spec import DNS_SUBDOMAIN_PATTERN, NON_NEGATIVE_QUANTITY_PATTERN

ENV_PREFIX = "KUBEDIFFUSERS_OPERATOR_"
DEFAULT_RUNNER_IMAGE = "ghcr.io/kubediffusers/runner:0.1.0"


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    runner_image: str = Field(default=DEFAULT_RUNNER_IMAGE, min_length=1, description="Runner image for pipelines that set no spec.runner.image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent", description="Pull policy of the runner image.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch, comma-separated (globs allowed). Empty: all namespaces."
    )
    hf_endpoint: str | None = Field(default=None, description="HF_ENDPOINT for the fetch init containers (a Hub mirror). Unset: huggingface.co.")
    log_format: Literal["plain", "full", "json"] = Field(default="full", description="Operator log format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Operator log level.")
    liveness_endpoint: str | None = Field(default="http://0.0.0.0:8080/healthz", description="URL the operator's liveness probe answers on; empty to disable.")
    peering_name: str = Field(default="kubediffusers", description="kopf peering object: of several operator replicas only one acts at a time.")
    standalone: bool = Field(default=False, description="Run without peering (one replica only, or for development).")
    resync_seconds: float = Field(default=60.0, gt=0, description="Each pipeline is re-checked this often even when nothing changes.")
    retry_seconds: float = Field(default=5.0, gt=0, description="Delay before retrying after the Kubernetes API failed.")
    image_pull_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Secrets for pulling runner images, comma-separated names, for pipelines that set no spec.imagePullSecrets."
    )
    runner_cpu_request: str | None = Field(
        default="1", description="CPU request of runner containers whose spec sets neither a CPU request nor a CPU limit; empty for none."
    )
    runner_memory_request: str | None = Field(
        default="4Gi",
        description="Memory request of runner containers whose spec sets neither a memory request nor a memory limit; empty for none.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus /metrics endpoint (reconciles, errors, pipelines by phase); 0: none (the chart sets 8081).",
    )
    run_as_user: int | None = Field(
        default=1000,
        ge=1,
        description="UID (and GID, fsGroup) of the runner pods. Empty: left unset, for OpenShift's restricted SCC to assign them from the namespace's range.",
    )
    progress_deadline_seconds: int = Field(
        default=7200,
        ge=600,
        description="The runner Deployment's progressDeadlineSeconds: room for a first model download and load before a rollout counts as stalled.",
    )
    list_chunk_size: int = Field(
        default=500, ge=1, description="Objects per page when kopf lists pipelines and children before watching (the API server's limit/continue)."
    )
    check_secret_keys: bool = Field(
        default=True,
        description=(
            "Read the Secrets that tokenSecretRef/authSecretRef name to check that they exist and hold the key (needs get on secrets). "
            "False: skip the check where policy forbids the operator reading Secrets; a missing one then shows as the pod's CreateContainerConfigError."
        ),
    )
    startup_timeout_seconds: int = Field(
        default=3600, ge=60, description="How long a runner may take to load its model before the kubelet restarts it (startup probe)."
    )
    prometheus_address: str | None = Field(
        default=None, description="Prometheus server the KEDA ScaledObjects query, for pipelines whose spec.autoscaling names none."
    )
    http_interceptor_service: str = Field(
        default="keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local",
        min_length=1,
        description="DNS name of the KEDA HTTP add-on's interceptor proxy Service (scale to zero: pipeline Services become ExternalNames to it).",
    )
    http_interceptor_port: int = Field(default=8080, ge=1, le=65535, description="Port of the interceptor proxy Service.")
    http_external_scaler_address: str = Field(
        default="keda-add-ons-http-external-scaler.keda:9090", min_length=1, description="host:port of the KEDA HTTP add-on's external scaler."
    )

    @field_validator("namespaces", "image_pull_secrets", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("hf_endpoint", "liveness_endpoint", "prometheus_address", "run_as_user", "runner_cpu_request", "runner_memory_request", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("runner_cpu_request", "runner_memory_request")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not re.match(NON_NEGATIVE_QUANTITY_PATTERN, value):
            raise ValueError(f"must be a quantity such as 500m, 2 or 8Gi, got {value!r}")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(DNS_SUBDOMAIN_PATTERN, name) or len(name) > 253:
                raise ValueError(f"not a Secret name: {name!r}")
        return value
