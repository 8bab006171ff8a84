"""Delivery details of the built objects: Service session affinity (async jobs across
replicas), image pull secrets and default requests on the pod, checked against the
Kubernetes schemas."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from kubediffusers.operator.builders import build_children, build_service
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.spec import SpecError
from tests.operator.helpers import K8S_VERSIONS, manifest

SETTINGS = OperatorSettings(runner_image="registry.example/runner:1", image_pull_secrets=["regcred"])


def service_of(**service: Any) -> dict[str, Any]:
    return build_service(Pipeline.from_manifest(manifest(replicas=2, service=service)))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_client_ip_affinity_with_a_timeout(version: str) -> None:
    svc = service_of(sessionAffinity="ClientIP", sessionAffinityTimeoutSeconds=600)
    kubernetes_validate.validate(svc, version, strict=True)
    assert svc["spec"]["sessionAffinity"] == "ClientIP"
    assert svc["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 600}}


def test_affinity_defaults_to_none_and_is_always_stated() -> None:
    # Stated even when None, so server-side apply resets a Service that had ClientIP.
    assert service_of()["spec"]["sessionAffinity"] == "None"
    assert "sessionAffinityConfig" not in service_of()["spec"]
    assert "sessionAffinityConfig" not in service_of(sessionAffinity="ClientIP")["spec"]  # Kubernetes' default: 10800 s


def test_affinity_changes_the_service_hash() -> None:
    from kubediffusers.operator import names

    a, b = service_of(), service_of(sessionAffinity="ClientIP")
    assert a["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] != b["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION]


@pytest.mark.parametrize(
    ("service", "where"),
    [
        ({"sessionAffinity": "Cookie"}, "spec.service.sessionAffinity"),
        ({"sessionAffinity": "ClientIP", "sessionAffinityTimeoutSeconds": 0}, "spec.service.sessionAffinityTimeoutSeconds"),
        ({"sessionAffinity": "ClientIP", "sessionAffinityTimeoutSeconds": 86401}, "spec.service.sessionAffinityTimeoutSeconds"),
        ({"sessionAffinityTimeoutSeconds": 60}, "sessionAffinityTimeoutSeconds needs service.sessionAffinity: ClientIP"),
    ],
)
def test_bad_affinity_is_an_invalid_spec(service: dict[str, Any], where: str) -> None:
    with pytest.raises(SpecError, match=where.replace(".", r"\.")):
        Pipeline.from_manifest(manifest(service=service))


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pull_secrets_and_requests_on_a_valid_pod(version: str) -> None:
    children = build_children(Pipeline.from_manifest(manifest(resources={"limits": {"nvidia.com/gpu": 1}})), SETTINGS)
    for child in children:
        kubernetes_validate.validate(child, version, strict=True)
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}
    # The fetcher has its own (spec.fetchResources); the runner defaults do not apply to it.
    assert pod["initContainers"][0]["resources"]["requests"] == {"cpu": "250m", "memory": "512Mi"}
