"""Names and labels of the objects a pipeline becomes (the contract in DESIGN.md)."""

from __future__ import annotations

MANAGER = "kubediffusers-operator"
APP_NAME = "kubediffusers-runner"
PIPELINE_LABEL = "kubediffusers.io/pipeline"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Annotation with a hash of what the operator last applied; a change re-applies the object.
SPEC_HASH_ANNOTATION = "kubediffusers.io/spec-hash"
# On the pod template too, so the status can tell pods of the current spec from old ones.
POD_HASH_ANNOTATION = "kubediffusers.io/pod-spec-hash"

RUNNER_PORT = 8000
MODEL_DIR = "/models"
FETCH_CONTAINER = "fetch"
RUNNER_CONTAINER = "runner"
FETCH_COMMAND = "kubediffusers-fetch"
RUNNER_COMMAND = "kubediffusers-runner"


def claim_name(pipeline: str) -> str:
    return f"{pipeline}-models"


def labels(pipeline: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": pipeline,
        MANAGED_BY_LABEL: MANAGER,
        PIPELINE_LABEL: pipeline,
    }


def selector_labels(pipeline: str) -> dict[str, str]:
    # A Deployment's selector is immutable: keep it to the two labels that never change.
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": pipeline}


def selector_string(pipeline: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pipeline).items()))


def service_url(pipeline: str, namespace: str, port: int) -> str:
    return f"http://{pipeline}.{namespace}.svc.cluster.local:{port}"
