"""The real kopf operator (handlers, daemons, watches, peering settings) against KMock.

Each test starts the operator in the test's event loop with a kubeconfig that points
at a fresh emulated API server, acts like a user or a controller through the HTTP
API, and waits for the operator to converge.
"""

from __future__ import annotations

import asyncio
import copy
import logging

import kmock
import pytest

import kubediffusers.operator.handlers  # noqa: F401  (registers the handlers with kopf)
from kubediffusers.operator import names
from kubediffusers.operator.runtime import Runtime
from tests.operator.fakecluster import CRD_RESOURCE, FakeCluster
from tests.operator.helpers import (
    DEPLOYMENTS,
    NS,
    PIPELINES,
    PODS,
    SECRETS,
    SERVICES,
    SHA,
    call,
    create_pipeline,
    deployment,
    events,
    manifest,
    obj,
    pipeline_status,
    pod_for,
    runner_image,
)
from tests.operator.helpers import settle as eventually

pytestmark = pytest.mark.slow


async def test_create_builds_children_with_owners_and_labels(cluster: FakeCluster, operator: Runtime) -> None:
    created = await create_pipeline(cluster, manifest())
    uid = created["metadata"]["uid"]
    await eventually(
        lambda: deployment(cluster) and obj(cluster, "v1/services", "sd") and obj(cluster, "v1/persistentvolumeclaims", "sd-models"), what="children"
    )
    for resource, name in (("apps/v1/deployments", "sd"), ("v1/services", "sd"), ("v1/persistentvolumeclaims", "sd-models")):
        child = obj(cluster, resource, name)
        assert child is not None
        assert child["metadata"]["ownerReferences"] == [
            {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "name": "sd", "uid": uid, "controller": True, "blockOwnerDeletion": True}
        ]
        assert child["metadata"]["labels"][names.PIPELINE_LABEL] == "sd"
    assert runner_image(deployment(cluster)) == "runner:test"
    status = await eventually(lambda: pipeline_status(cluster).get("phase") and pipeline_status(cluster), what="status")
    assert status["url"] == f"http://sd.{NS}.svc.cluster.local:80"
    assert status["selector"] == "app.kubernetes.io/instance=sd,app.kubernetes.io/name=kubediffusers-runner"
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]}["Valid"] == "True"
    # Created by server-side apply only, never POST: one owner, the operator's Apply manager.
    writes = [r for r in list(cluster) if r.resource is not None and r.resource.plural in ("deployments", "services", "persistentvolumeclaims")]
    assert not [r for r in writes if r.method == "POST"]
    for resource, name in (("apps/v1/deployments", "sd"), ("v1/services", "sd"), ("v1/persistentvolumeclaims", "sd-models")):
        managers = {(e["manager"], e["operation"]) for e in (obj(cluster, resource, name) or {})["metadata"]["managedFields"]}
        assert managers == {(names.MANAGER, "Apply")}, (resource, managers)
    await eventually(lambda: any(e.get("reason") == "Pending" for e in events(cluster)), what="a Pending event")


async def test_status_follows_pods_through_download_failure_and_ready(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest())
    dep = await eventually(lambda: deployment(cluster))
    await call(cluster, "POST", PODS, pod_for(dep, "sd-1", {"phase": "Pending", "initContainerStatuses": [{"name": "fetch", "state": {"running": {}}}]}))
    await eventually(lambda: pipeline_status(cluster).get("phase") == "Downloading", what="Downloading")

    failed = {"initContainerStatuses": [{"name": "fetch", "state": {"terminated": {"exitCode": 1, "message": "gated repository: a token is needed"}}}]}
    await call(cluster, "PATCH", f"{PODS}/sd-1/status", {"status": failed})
    status = await eventually(lambda: pipeline_status(cluster).get("phase") == "Failed" and pipeline_status(cluster), what="Failed")
    assert status["message"] == "gated repository: a token is needed"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["ModelCached"] == "FetchFailed"

    ready = {
        "initContainerStatuses": [{"name": "fetch", "state": {"terminated": {"exitCode": 0, "message": f"resolved {SHA}"}}}],
        "containerStatuses": [{"name": "runner", "ready": True, "state": {"running": {}}}],
    }
    await call(cluster, "PATCH", f"{PODS}/sd-1/status", {"status": ready})
    await call(cluster, "PATCH", f"{DEPLOYMENTS}/sd/status", {"status": {"replicas": 1, "readyReplicas": 1}})
    status = await eventually(
        lambda: pipeline_status(cluster).get("phase") == "Ready" and pipeline_status(cluster).get("readyReplicas") == 1 and pipeline_status(cluster),
        what="Ready",
    )
    assert status["model"]["resolvedRevision"] == SHA and status["readyReplicas"] == 1
    # Events are posted asynchronously by kopf's poster: wait for them too.
    await eventually(lambda: {"Downloading", "Failed", "Ready"} <= {e.get("reason") for e in events(cluster)}, what="phase Events")
    warnings = [e for e in events(cluster) if e.get("reason") == "Failed"]
    assert warnings and warnings[0]["type"] == "Warning" and "token is needed" in warnings[0]["message"]


async def test_spec_update_rolls_the_deployment(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest())
    before = await eventually(lambda: deployment(cluster))
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"model": {"id": "stabilityai/sdxl-turbo"}, "runner": {"image": "runner:v2"}}})
    after = await eventually(lambda: runner_image(deployment(cluster)) == "runner:v2" and deployment(cluster), what="image updated")
    env = {e["name"]: e.get("value") for e in after["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEDIFFUSERS_MODEL_ID"] == "stabilityai/sdxl-turbo"
    fetch_env = {e["name"]: e.get("value") for e in after["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert fetch_env["KUBEDIFFUSERS_MODEL_ID"] == "stabilityai/sdxl-turbo"  # the new pods fetch the new model first
    hash_of = lambda d: d["spec"]["template"]["metadata"]["annotations"][names.POD_HASH_ANNOTATION]  # noqa: E731
    assert hash_of(before) != hash_of(after)
    await eventually(lambda: pipeline_status(cluster).get("observedGeneration") == 2, what="observedGeneration 2")


async def test_drift_is_repaired(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest())
    await eventually(lambda: deployment(cluster) and obj(cluster, "v1/services", "sd"))
    # Someone deletes the Service: it comes back.
    await call(cluster, "DELETE", f"{SERVICES}/sd")
    await eventually(lambda: obj(cluster, "v1/services", "sd"), what="Service recreated")
    # Someone edits the runner image: it is put back (the whole container list is re-applied).
    dep = deployment(cluster)
    assert dep is not None
    containers = copy.deepcopy(dep["spec"]["template"]["spec"]["containers"])
    containers[0]["image"] = "evil:latest"
    await call(cluster, "PATCH", f"{DEPLOYMENTS}/sd", {"spec": {"template": {"spec": {"containers": containers}}}})
    await eventually(lambda: runner_image(deployment(cluster)) == "runner:test", what="image restored")
    # Someone scales the Deployment directly: the pipeline's replicas win.
    await call(cluster, "PATCH", f"{DEPLOYMENTS}/sd", {"spec": {"replicas": 5}})
    await eventually(lambda: (deployment(cluster) or {}).get("spec", {}).get("replicas") == 1, what="replicas restored")


async def test_scale_subresource_is_honoured_and_read_write_once_is_reported(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest(storage={"accessModes": ["ReadWriteMany"]}))
    await eventually(lambda: deployment(cluster))
    await call(cluster, "PATCH", f"{PIPELINES}/sd/scale", {"spec": {"replicas": 3}})  # what `kubectl scale` sends
    await eventually(lambda: (deployment(cluster) or {}).get("spec", {}).get("replicas") == 3, what="scaled to 3")

    # An explicitly Shared ReadWriteOnce claim cannot serve 3 nodes: clamped, and said so.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"accessModes": ["ReadWriteOnce"], "layout": "Shared"}}})
    valid = lambda: next((c for c in pipeline_status(cluster).get("conditions", []) if c["type"] == "Valid"), {})  # noqa: E731
    await eventually(lambda: valid().get("reason") == "ReadWriteOnceWithReplicas", what="RWO condition")
    assert "running 1 replica" in valid()["message"] and valid()["status"] == "False"
    assert (deployment(cluster) or {})["spec"]["replicas"] == 1
    # Layout Auto (the default) gives each pod its own volume instead (tests/operator/test_storage_layouts.py).
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"layout": "Auto"}}})
    await eventually(lambda: (deployment(cluster) or {}).get("spec", {}).get("replicas") == 3, what="3 replicas with per-pod volumes")
    await eventually(lambda: pipeline_status(cluster).get("storage", {}).get("layout") == "PerPod", what="status.storage.layout PerPod")


async def test_invalid_specs_end_in_a_condition_without_children(cluster: FakeCluster, operator: Runtime) -> None:
    secret_ref = {"id": "stabilityai/sd-turbo", "tokenSecretRef": {"name": "hf-token", "key": "token"}}
    await create_pipeline(cluster, manifest(model=secret_ref))
    status = await eventually(lambda: pipeline_status(cluster).get("phase") == "Failed" and pipeline_status(cluster), what="Failed")
    assert status["conditions"][0]["reason"] == "SecretNotFound"
    assert "Secret 'hf-token' not found" in status["message"]
    await asyncio.sleep(0.3)
    assert deployment(cluster) is None and obj(cluster, "v1/persistentvolumeclaims", "sd-models") is None

    # The Secret appears (with a value the operator must never echo): the pipeline proceeds.
    await call(
        cluster,
        "POST",
        SECRETS,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": NS}, "data": {"token": "c2VjcmV0LXZhbHVl"}},
    )
    await eventually(lambda: deployment(cluster), what="children after the Secret appeared")
    assert "c2VjcmV0LXZhbHVl" not in str(pipeline_status(cluster)) and "secret-value" not in str(events(cluster))

    # A spec the schema would have refused (KMock does not validate): reported, no crash loop.
    await call(
        cluster,
        "POST",
        PIPELINES,
        {
            "apiVersion": "kubediffusers.io/v1alpha1",
            "kind": "InferencePipeline",
            "metadata": {"name": "bad", "namespace": NS},
            "spec": {"task": "painting", "model": {"id": "a/b"}},
        },
    )
    bad = await eventually(lambda: pipeline_status(cluster, "bad").get("phase") == "Failed" and pipeline_status(cluster, "bad"), what="bad Failed")
    assert bad["conditions"][0]["reason"] == "InvalidSpec" and "spec.task" in bad["message"]
    assert deployment(cluster, "bad") is None


async def test_delete_takes_the_children_unless_the_claim_is_retained(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest())
    await create_pipeline(cluster, manifest(name="keep", storage={"deletePolicy": "Retain"}))
    await eventually(lambda: deployment(cluster) and deployment(cluster, "keep") and obj(cluster, "v1/persistentvolumeclaims", "keep-models"))
    await eventually(lambda: "kubediffusers.io/finalizer" in (obj(cluster, CRD_RESOURCE, "sd") or {}).get("metadata", {}).get("finalizers", []))
    await call(cluster, "DELETE", f"{PIPELINES}/sd")
    await call(cluster, "DELETE", f"{PIPELINES}/keep")
    await eventually(lambda: obj(cluster, CRD_RESOURCE, "sd") is None and obj(cluster, CRD_RESOURCE, "keep") is None, what="pipelines gone")
    await eventually(
        lambda: deployment(cluster) is None and obj(cluster, "v1/services", "sd") is None and obj(cluster, "v1/persistentvolumeclaims", "sd-models") is None,
        what="children collected",
    )
    assert obj(cluster, "v1/persistentvolumeclaims", "keep-models") is not None  # Retain
    assert deployment(cluster, "keep") is None
    await asyncio.sleep(0.3)  # and nothing recreates them
    assert deployment(cluster) is None


async def test_api_faults_converge_without_duplicates(cluster: FakeCluster, operator: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    deployments = kmock.resource("apps/v1/deployments")
    # The Deployment's creating apply answers 500 although the emulator stores it (a lost
    # answer); a stale read then claims it is still missing, so the operator applies again
    # (an apply is idempotent: still one object). Status writes conflict; a read is Gone.
    cluster["patch", deployments][:1] << kmock.KubernetesError(status=500, reason="InternalError", message="etcd is sad")
    cluster["get", deployments, kmock.name("sd")][:2] << 404
    cluster["patch", kmock.resource(CRD_RESOURCE), kmock.subresource("status")][:2] << kmock.KubernetesError(status=409, reason="Conflict", message="try again")
    cluster["get", kmock.resource("v1/services"), kmock.name("sd")][:1] << kmock.KubernetesError(status=410, reason="Gone", message="too old")
    await create_pipeline(cluster, manifest())
    await eventually(lambda: deployment(cluster) and obj(cluster, "v1/services", "sd") and pipeline_status(cluster).get("phase"), what="converged")
    assert not [r for r in list(cluster) if r.method == "POST" and r.resource == deployments]
    assert sum(1 for (res, _, _), o in cluster.objects.items() if res == deployments and not o.deleted) == 1
    assert any("retrying" in r.getMessage() for r in caplog.records)
    # The operator keeps working afterwards.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"runner": {"image": "runner:v3"}}})
    await eventually(lambda: runner_image(deployment(cluster)) == "runner:v3", what="still reconciling")
