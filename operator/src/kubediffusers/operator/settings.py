"""Operator configuration: environment variables prefixed ``KUBEDIFFUSERS_OPERATOR_``.

The Helm chart sets these on the operator Deployment; ``kubediffusers render`` and
``kubediffusers local`` read the same ones, so a default image is defined once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    run_as_user: int = Field(default=1000, ge=1, description="UID (and GID, fsGroup) of the runner pods.")
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

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("hf_endpoint", "liveness_endpoint", "prometheus_address", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value
