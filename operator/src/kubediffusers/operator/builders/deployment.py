"""The Deployment ``<name>``: init container ``fetch``, container ``runner``."""

from __future__ import annotations

import math
from typing import Any

from .. import names
from ..layout import per_pod_volume, single_node, storage_layout
from ..pipeline import Pipeline
from ..settings import OperatorSettings
from .env import build_fetch_env, build_runner_env
from .meta import object_meta, spec_hash, with_hash

PROBE_PERIOD_SECONDS = 10

# "restricted" Pod Security Standard, container level.
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "models", "mountPath": names.MODEL_DIR},
        # The root filesystem is read-only; Python, torch and the Hub library need a scratch dir.
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def _probe(path: str, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def build_pod_spec(pipeline: Pipeline, settings: OperatorSettings) -> dict[str, Any]:
    spec = pipeline.spec
    image = spec.runner.image or settings.runner_image
    fetch = {
        "name": names.FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [names.FETCH_COMMAND],
        "env": build_fetch_env(pipeline, settings),
        "volumeMounts": _volume_mounts(),
        # The fetcher writes a one-line reason (or "resolved <sha>") here; the status shows it.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    runner: dict[str, Any] = {
        "name": names.RUNNER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [names.RUNNER_COMMAND],
        "ports": [{"name": "http", "containerPort": names.RUNNER_PORT, "protocol": "TCP"}],
        "env": build_runner_env(pipeline, settings),
        "volumeMounts": _volume_mounts(),
        # Big models take minutes to load and warm up: the startup probe holds liveness off until then.
        "startupProbe": _probe("/readyz", math.ceil(settings.startup_timeout_seconds / PROBE_PERIOD_SECONDS)),
        "readinessProbe": _probe("/readyz", 3),
        "livenessProbe": _probe("/healthz", 6),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    if spec.resources is not None:
        resources = spec.resources.model_dump(exclude_none=True)
        if resources:
            runner["resources"] = resources
    claim = spec.storage.existing_claim or names.claim_name(pipeline.name)
    models = {"name": "models", "persistentVolumeClaim": {"claimName": claim}}
    if storage_layout(spec) == "PerPod":
        models = per_pod_volume(spec, pipeline.name)  # each pod's own claim, made and deleted with it (layout.py)
    pod: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            # fsGroup makes the claim writable by the non-root user.
            "fsGroup": settings.run_as_user,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,  # the runner never talks to the API
        "enableServiceLinks": False,
        "initContainers": [fetch],
        "containers": [runner],
        "volumes": [
            models,
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    if spec.affinity:
        pod["affinity"] = spec.affinity
    if spec.runtime_class_name:
        pod["runtimeClassName"] = spec.runtime_class_name
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    return pod


def build_deployment(pipeline: Pipeline, settings: OperatorSettings, replicas: int | None = None) -> dict[str, Any]:
    """The Deployment; ``replicas`` overrides spec.replicas (the operator clamps it for ReadWriteOnce claims)."""
    pod_spec = build_pod_spec(pipeline, settings)
    template_labels = names.labels(pipeline.name)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(pipeline, pipeline.name),
        "spec": {
            "replicas": pipeline.spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": names.selector_labels(pipeline.name)},
            # A claim that only one node can mount cannot host old and new pods at once.
            "strategy": _strategy(pipeline),
            "template": {
                "metadata": {
                    "labels": template_labels,
                    "annotations": {names.POD_HASH_ANNOTATION: spec_hash(pod_spec)},
                },
                "spec": pod_spec,
            },
        },
    }
    return with_hash(deployment)


def _strategy(pipeline: Pipeline) -> dict[str, Any]:
    storage = pipeline.spec.storage
    shared_single_node = storage_layout(pipeline.spec) == "Shared" and not storage.existing_claim and single_node(storage.access_modes)
    if shared_single_node:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
