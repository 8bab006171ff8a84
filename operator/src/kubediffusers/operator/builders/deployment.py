"""The Deployment ``<name>``: init container ``fetch``, container ``runner``."""

from __future__ import annotations

import math
from typing import Any

from .. import names
from ..layout import per_pod_volume, storage_layout
from ..pipeline import Pipeline
from ..settings import OperatorSettings
from .env import build_fetch_env, build_runner_env
from .meta import object_meta, spec_hash, with_hash

PROBE_PERIOD_SECONDS = 10
# preStop pause: the Service's endpoints drop the pod before the runner hears SIGTERM.
PRESTOP_SECONDS = 5
# The runner's default request timeout, which its drain deadline defaults to (checked against the runner by a test).
RUNNER_REQUEST_TIMEOUT_SECONDS = 300.0
# After the drain: answers still being written (the runner cuts slow readers at its 20 s write timeout), then exit.
EXIT_MARGIN_SECONDS = 30
# Scratch space (uploads spooled past 1 MiB, the Hub library's state): bounded so no client can fill the node's disk.
TMP_SIZE_LIMIT = "4Gi"

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


def termination_grace_seconds(pipeline: Pipeline) -> int:
    """preStop, then the runner's drain deadline, then the last answers: what the pod is given after deletion."""
    runner = pipeline.spec.runner
    drain = runner.drain_seconds or runner.request_timeout_seconds or RUNNER_REQUEST_TIMEOUT_SECONDS
    return PRESTOP_SECONDS + math.ceil(drain) + EXIT_MARGIN_SECONDS


def build_pod_spec(pipeline: Pipeline, settings: OperatorSettings, claim_modes: frozenset[str] | None = None) -> dict[str, Any]:
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
        # Every container requests cpu and memory: a ResourceQuota on them rejects the pod otherwise.
        "resources": spec.fetch_resources.model_dump(exclude_none=True),
    }
    runner: dict[str, Any] = {
        "name": names.RUNNER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [names.RUNNER_COMMAND],
        "ports": [{"name": "http", "containerPort": names.RUNNER_PORT, "protocol": "TCP"}],
        "env": build_runner_env(pipeline, settings, claim_modes),
        "volumeMounts": _volume_mounts(),
        # Big models take minutes to load and warm up: the startup probe holds liveness off until then.
        "startupProbe": _probe("/readyz", math.ceil(settings.startup_timeout_seconds / PROBE_PERIOD_SECONDS)),
        "readinessProbe": _probe("/readyz", 3),
        "livenessProbe": _probe("/healthz", 6),
        # SIGTERM comes after this pause, once no new request is routed here; the runner then drains.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(RESTRICTED_CONTAINER),
    }
    resources = _resources(pipeline, settings)
    if resources:
        runner["resources"] = resources
    claim = spec.storage.existing_claim or names.claim_name(pipeline.name)
    models: dict[str, Any] = {"name": "models", "persistentVolumeClaim": {"claimName": claim}}
    if storage_layout(spec) == "PerPod":
        models = per_pod_volume(spec, pipeline.name)  # each pod's own claim, made and deleted with it (layout.py)
    security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if settings.run_as_user is not None:  # unset on OpenShift: the restricted SCC assigns them
        # fsGroup makes the claim writable by the non-root user.
        security |= {"runAsUser": settings.run_as_user, "runAsGroup": settings.run_as_user, "fsGroup": settings.run_as_user}
    security["fsGroupChangePolicy"] = "OnRootMismatch"
    pod: dict[str, Any] = {
        "securityContext": security,
        "automountServiceAccountToken": False,  # the runner never talks to the API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds(pipeline),
        "initContainers": [fetch],
        "containers": [runner],
        "volumes": [
            models,
            {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
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
    pull_secrets = [ref.name for ref in spec.image_pull_secrets] if spec.image_pull_secrets is not None else settings.image_pull_secrets
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in pull_secrets]
    return pod


def _resources(pipeline: Pipeline, settings: OperatorSettings) -> dict[str, Any]:
    """The spec's resources, plus the operator's default CPU/memory requests where the spec sets neither.

    A pod without a memory request is the kubelet's first eviction candidate under
    memory pressure (BestEffort, or Burstable above its request). A resource the
    spec limits gets no default request: Kubernetes then requests the limit, and a
    default above a smaller limit would make the pod invalid.
    """
    resources = pipeline.spec.resources.model_dump(exclude_none=True) if pipeline.spec.resources is not None else {}
    requests, limits = dict(resources.get("requests") or {}), resources.get("limits") or {}
    for name, default in (("cpu", settings.runner_cpu_request), ("memory", settings.runner_memory_request)):
        if default is not None and name not in requests and name not in limits:
            requests[name] = default
    if requests:
        resources["requests"] = requests
    return resources


def build_deployment(pipeline: Pipeline, settings: OperatorSettings, replicas: int | None = None, claim_modes: frozenset[str] | None = None) -> dict[str, Any]:
    """The Deployment; ``replicas`` overrides spec.replicas (the operator clamps it for ReadWriteOnce claims).

    ``claim_modes``: the access modes of the existing claim (spec.storage.existingClaim), when known.
    """
    pod_spec = build_pod_spec(pipeline, settings, claim_modes)
    template_labels = names.labels(pipeline.name)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(pipeline, pipeline.name),
        "spec": {
            "replicas": pipeline.spec.replicas if replicas is None else replicas,
            "selector": {"matchLabels": names.selector_labels(pipeline.name)},
            # A claim that only one node can mount cannot host old and new pods at once.
            "strategy": _strategy(pipeline, claim_modes),
            # A first start downloads the model and may load it for an hour: not a stalled rollout.
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
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


def _strategy(pipeline: Pipeline, claim_modes: frozenset[str] | None) -> dict[str, Any]:
    storage = pipeline.spec.storage
    modes = (claim_modes or frozenset()) if storage.existing_claim else frozenset(storage.access_modes)
    kind = pipeline.spec.rollout_strategy
    if kind == "Auto":
        # Old and new pods can run side by side on a claim every node can mount, or
        # with layout PerPod, where each new pod brings its own volume.
        kind = "RollingUpdate" if storage_layout(pipeline.spec) == "PerPod" or "ReadWriteMany" in modes else "Recreate"
    if kind == "Recreate":
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
