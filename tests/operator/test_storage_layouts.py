"""Storage layouts: one shared claim, or a cache volume per pod so replicas run on ReadWriteOnce storage.

Pure builders and status here; the operator against the emulator with several
replicas at the end.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubediffusers.operator import names
from kubediffusers.operator.builders import build_children, build_claim, build_deployment
from kubediffusers.operator.layout import storage_layout
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.spec import SpecError
from kubediffusers.operator.status import storage_status
from tests.operator.fakecluster import FakeCluster
from tests.operator.helpers import K8S_VERSIONS, NS, call, create_pipeline, deployment, manifest, obj, pipeline_status, validate_object
from tests.operator.helpers import settle as eventually

SETTINGS = OperatorSettings(runner_image="runner:test")
SHA = "89abcdef0123456789abcdef0123456789abcdef"


def pipeline(**spec: Any) -> Pipeline:
    return Pipeline.from_manifest(manifest(**spec))


@pytest.mark.parametrize(
    ("spec", "layout"),
    [
        ({}, "Shared"),  # one replica on the default ReadWriteOnce claim
        ({"replicas": 3}, "PerPod"),  # more than one node may host them: a volume each
        ({"replicas": 1, "autoscaling": {"maxReplicas": 4, "prometheusAddress": "http://p:9090"}}, "PerPod"),  # what it may scale to decides
        ({"replicas": 3, "storage": {"accessModes": ["ReadWriteMany"]}}, "Shared"),
        ({"replicas": 3, "storage": {"accessModes": ["ReadWriteOncePod"]}}, "PerPod"),
        ({"replicas": 3, "storage": {"existingClaim": "cache"}}, "Shared"),  # the user's claim is used as it is
        ({"replicas": 3, "storage": {"layout": "Shared"}}, "Shared"),  # explicit: clamped to 1 with a condition (checks.py)
        ({"replicas": 1, "storage": {"layout": "PerPod"}}, "PerPod"),
    ],
)
def test_auto_layout_follows_access_modes_and_the_most_replicas(spec: dict[str, Any], layout: str) -> None:
    assert storage_layout(pipeline(**spec).spec) == layout


def test_per_pod_layout_gives_each_pod_an_ephemeral_claim_and_no_shared_claim() -> None:
    p = pipeline(replicas=3, storage={"size": "30Gi", "storageClassName": "fast-rwo"})
    assert build_claim(p) is None
    children = build_children(p, SETTINGS)
    assert [c["kind"] for c in children] == ["Deployment", "Service"]
    dep = build_deployment(p, SETTINGS)
    assert dep["spec"]["replicas"] == 3
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    template = volume["ephemeral"]["volumeClaimTemplate"]
    assert template["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "30Gi"}}, "storageClassName": "fast-rwo"}
    assert template["metadata"]["labels"][names.PIPELINE_LABEL] == "sd"  # `kubectl get pvc -l kubediffusers.io/pipeline=sd` lists them
    # No claim is shared, so old and new pods can overlap during a rollout.
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    for version in K8S_VERSIONS:
        for child in children:
            validate_object(child, version)


def test_shared_layouts_mount_the_claim() -> None:
    own = build_deployment(pipeline(), SETTINGS)
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "sd-models"}} in own["spec"]["template"]["spec"]["volumes"]
    assert own["spec"]["strategy"] == {"type": "Recreate"}  # one node's claim cannot host old and new pods at once
    shared = build_deployment(pipeline(replicas=3, storage={"existingClaim": "cache"}), SETTINGS)
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "cache"}} in shared["spec"]["template"]["spec"]["volumes"]


def test_per_pod_cannot_be_combined_with_an_existing_claim() -> None:
    with pytest.raises(SpecError, match=r"layout PerPod .* cannot be combined with storage\.existingClaim"):
        pipeline(storage={"layout": "PerPod", "existingClaim": "cache"})
    with pytest.raises(SpecError, match=r"spec\.storage\.layout"):
        pipeline(storage={"layout": "Sometimes"})


def _pod(dep: dict[str, Any], name: str, status: dict[str, Any], pod_hash: str | None = None) -> dict[str, Any]:
    meta = copy.deepcopy(dep["spec"]["template"]["metadata"])
    if pod_hash is not None:
        meta["annotations"][names.POD_HASH_ANNOTATION] = pod_hash
    return {"metadata": {"name": name, **meta}, "status": status}


FETCHED = {"initContainerStatuses": [{"name": "fetch", "state": {"terminated": {"exitCode": 0, "message": f"resolved {SHA}"}}}]}
FETCHING = {"initContainerStatuses": [{"name": "fetch", "state": {"running": {}}}]}
READY = {**FETCHED, "containerStatuses": [{"name": "runner", "ready": True, "state": {"running": {}}}]}


def test_status_counts_the_replicas_of_the_current_spec_with_their_model_cached() -> None:
    p = pipeline(replicas=3)
    dep = build_deployment(p, SETTINGS)
    current = dep["spec"]["template"]["metadata"]["annotations"][names.POD_HASH_ANNOTATION]
    pods = [_pod(dep, "a", READY), _pod(dep, "b", FETCHED), _pod(dep, "c", FETCHING), _pod(dep, "old", READY, pod_hash="0" * 16)]
    gone = _pod(dep, "d", READY)
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert storage_status(p.spec, "sd", [*pods, gone], current) == {"layout": "PerPod", "cachedReplicas": 2, "sharedJobs": False}
    assert storage_status(pipeline().spec, "sd", [], current) == {"layout": "Shared", "claim": "sd-models", "cachedReplicas": 0, "sharedJobs": False}


# ---- the operator against the emulator, several replicas on ReadWriteOnce storage


@pytest.mark.slow
async def test_several_replicas_on_read_write_once_storage(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest(replicas=3))
    dep = await eventually(lambda: deployment(cluster), what="Deployment")
    assert dep["spec"]["replicas"] == 3
    assert obj(cluster, "v1/persistentvolumeclaims", "sd-models") is None  # no shared claim to fight over
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert "ephemeral" in volume
    # The Deployment controller's pods (played here): two fetched, one still downloading.
    for name, state in (("sd-a", READY), ("sd-b", FETCHED), ("sd-c", FETCHING)):
        pod = {"apiVersion": "v1", "kind": "Pod", **_pod(dep, name, state)}
        pod["metadata"]["namespace"] = NS
        pod["spec"] = dep["spec"]["template"]["spec"]
        await call(cluster, "POST", f"/api/v1/namespaces/{NS}/pods", pod)
    status = await eventually(lambda: (pipeline_status(cluster).get("storage") or {}).get("cachedReplicas") == 2 and pipeline_status(cluster))
    assert status["storage"] == {"layout": "PerPod", "cachedReplicas": 2, "sharedJobs": False}
    valid = next(c for c in status["conditions"] if c["type"] == "Valid")
    assert valid["status"] == "True"  # no clamp, no warning
    # kubectl scale through the subresource: more per-pod replicas, same template.
    await call(cluster, "PATCH", f"/apis/kubediffusers.io/v1alpha1/namespaces/{NS}/inferencepipelines/sd/scale", {"spec": {"replicas": 5}})
    scaled = await eventually(lambda: (deployment(cluster) or {}).get("spec", {}).get("replicas") == 5 and deployment(cluster), what="5 replicas")
    assert scaled["spec"]["template"] == dep["spec"]["template"]
