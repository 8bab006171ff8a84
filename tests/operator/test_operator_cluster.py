"""The operator against the strict emulator: what a real API server does to ordinary spec edits.

Each test here failed on the operator before issue 11 (POST then apply, no immutable-
field checks, ...); see docs/operator.md, "The emulator".
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kubediffusers.operator import names
from kubediffusers.operator.builders import build_deployment
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.fakecluster import FakeCluster
from tests.operator.helpers import (
    CLAIMS,
    DEPLOYMENTS,
    NS,
    PIPELINES,
    PODS,
    SECRETS,
    call,
    create_pipeline,
    deployment,
    manifest,
    obj,
    pipeline_status,
    pod_for,
    running_operator,
)
from tests.operator.helpers import settle as eventually

pytestmark = pytest.mark.slow


def runner(dep: dict[str, Any] | None) -> dict[str, Any]:
    return (dep or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]


def env_names(dep: dict[str, Any] | None) -> set[str]:
    return {e["name"] for e in runner(dep).get("env") or []}


def condition(name: str, type_: str, cluster: FakeCluster) -> dict[str, Any]:
    return next((c for c in pipeline_status(cluster, name).get("conditions", []) if c["type"] == type_), {})


async def storage_condition(cluster: FakeCluster, reason: str) -> dict[str, Any]:
    found: dict[str, Any] = await eventually(
        lambda: condition("sd", "StorageReady", cluster).get("reason") == reason and condition("sd", "StorageReady", cluster),
        what=lambda: f"StorageReady {reason}: {pipeline_status(cluster)}",
    )
    return found


async def test_edits_remove_what_the_spec_no_longer_sets(cluster: FakeCluster, operator: Runtime) -> None:
    await call(cluster, "POST", SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "auth", "namespace": NS}, "data": {"token": "eA=="}})
    spec = {
        "nodeSelector": {"gpu": "a100", "zone": "z1"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": 1}},
        "runner": {"env": [{"name": "KEEP", "value": "1"}, {"name": "DROP", "value": "2"}], "authSecretRef": {"name": "auth", "key": "token"}},
        "storage": {"accessModes": ["ReadWriteMany"]},
    }
    await create_pipeline(cluster, manifest(**spec))
    await eventually(lambda: "DROP" in env_names(deployment(cluster)), what="Deployment with DROP")
    edited = {
        "nodeSelector": {"gpu": "a100", "zone": None},  # a merge patch: null removes a key
        "tolerations": None,
        "resources": {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": None}},
        "runner": {"env": [{"name": "KEEP", "value": "1"}], "authSecretRef": None},
        "service": {"port": 8080},
        "storage": {"accessModes": ["ReadWriteMany"]},
    }
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": edited})
    await eventually(lambda: "DROP" not in env_names(deployment(cluster)), what="DROP removed")
    pod = (deployment(cluster) or {})["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}  # atomic map: replaced whole
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in runner(deployment(cluster))["resources"]["limits"]
    assert "KUBEDIFFUSERS_AUTH_TOKEN" not in env_names(deployment(cluster))
    svc = await eventually(
        lambda: [p["port"] for p in (obj(cluster, "v1/services", "sd") or {})["spec"]["ports"]] == [8080] and obj(cluster, "v1/services", "sd")
    )
    assert svc["spec"]["ports"][0]["name"] == "http"
    assert pipeline_status(cluster).get("phase") != "Failed", pipeline_status(cluster)


async def test_children_created_by_post_are_migrated_to_apply(cluster: FakeCluster) -> None:
    """A Deployment created by an earlier operator (POST: an Update manager) loses the fields the spec no longer sets."""
    created = await create_pipeline(cluster, manifest(runner={"env": [{"name": "OLD", "value": "x"}]}))
    old = build_deployment(Pipeline.from_manifest(created), OperatorSettings(runner_image="runner:test"))
    async with cluster.request("POST", f"{DEPLOYMENTS}?fieldManager={names.MANAGER}", json=old, headers={"Content-Type": "application/json"}) as response:
        assert response.status < 400, await response.text()
    assert {(e["manager"], e["operation"]) for e in (deployment(cluster) or {})["metadata"]["managedFields"]} == {(names.MANAGER, "Update")}
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"runner": {"env": []}}})
    async with running_operator():  # the new operator
        await eventually(lambda: "OLD" not in env_names(deployment(cluster)), what="OLD removed after the migration")
    managers = {(e["manager"], e["operation"]) for e in (deployment(cluster) or {})["metadata"]["managedFields"]}
    assert managers == {(names.MANAGER, "Apply")}


async def test_storage_edits_are_checked_and_the_rest_still_applied(cluster: FakeCluster, operator: Runtime) -> None:
    await call(
        cluster,
        "POST",
        "/apis/storage.k8s.io/v1/storageclasses",
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fixed"}, "provisioner": "x", "allowVolumeExpansion": False},
    )
    await create_pipeline(cluster, manifest(storage={"size": "10Gi", "storageClassName": "fixed"}))
    await eventually(lambda: obj(cluster, "v1/persistentvolumeclaims", "sd-models"))
    await call(cluster, "PATCH", f"{CLAIMS}/sd-models/status", {"status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}})
    # Shrinking is caught before writing; the image edit made at the same time still reaches the Deployment.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"size": "5Gi"}, "runner": {"image": "runner:v2"}}})
    await eventually(lambda: runner(deployment(cluster)).get("image") == "runner:v2", what="Deployment updated despite the storage edit")
    cond = await storage_condition(cluster, "StorageChangeRejected")
    assert "cannot shrink" in cond["message"] and "10Gi" in cond["message"]
    # Growing on a class without expansion: the API server refuses (403); said, with what to do.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"size": "20Gi"}}})
    cond = await storage_condition(cluster, "StorageResizeRejected")
    assert "allowVolumeExpansion" in cond["message"]
    # Expansion allowed: accepted, reported as resizing until the capacity shows it.
    await call(cluster, "PATCH", "/apis/storage.k8s.io/v1/storageclasses/fixed", {"allowVolumeExpansion": True})
    await eventually(lambda: condition("sd", "StorageReady", cluster).get("reason") == "Resizing", what="Resizing")
    assert (obj(cluster, "v1/persistentvolumeclaims", "sd-models") or {})["spec"]["resources"]["requests"]["storage"] == "20Gi"
    await call(cluster, "PATCH", f"{CLAIMS}/sd-models/status", {"status": {"capacity": {"storage": "20Gi"}}})
    await eventually(lambda: condition("sd", "StorageReady", cluster).get("status") == "True", what="resized")
    # An access-mode change on the existing claim is refused before writing too.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"accessModes": ["ReadWriteMany"]}}})
    cond = await eventually(lambda: "access modes" in condition("sd", "StorageReady", cluster).get("message", "") and condition("sd", "StorageReady", cluster))
    assert cond["status"] == "False"


def applies(cluster: FakeCluster) -> int:
    return sum(1 for r in list(cluster) if r.method == "PATCH" and r.headers.get("Content-Type", "").startswith("application/apply-patch"))


async def test_a_converged_pipeline_sends_no_apply_on_resync(cluster: FakeCluster, operator: Runtime) -> None:
    """The API server returns 1Gi for 1024Mi, 1 for 1000m, and no value for an empty one: that is not drift."""
    resources = {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"memory": "20480Mi", "nvidia.com/gpu": 1}}
    await create_pipeline(cluster, manifest(resources=resources, runner={"env": [{"name": "EMPTY", "value": ""}]}))
    dep = await eventually(lambda: deployment(cluster))
    assert runner(dep)["resources"] == {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"}, "limits": {"memory": "20Gi", "nvidia.com/gpu": "1"}}
    assert {"name": "EMPTY"} in runner(dep)["env"]
    await eventually(lambda: pipeline_status(cluster).get("phase"), what="a status")
    before = applies(cluster)
    await asyncio.sleep(3.5)  # three resyncs (resync_seconds=1)
    assert applies(cluster) == before


@pytest.mark.parametrize(
    "given",
    ["1024Mi", "1000m", "20480Mi", "0.5Gi", "1.5", "2000", "100m", "1536Mi", "1e3", "0.1Gi", "512", 1, "12Gi", "1025Ki", "0", "5k"],
)
def test_quantities_are_canonical_as_the_api_server_prints_them(given: object) -> None:
    from kubediffusers.operator.normalize import canonical_quantity as operator_form
    from tests.operator.fakecluster import canonical_quantity as emulator_form

    assert operator_form(given) == emulator_form(given)


def test_known_canonical_forms() -> None:
    """Forms apimachinery's resource.Quantity prints (kubectl get -o yaml shows them)."""
    from kubediffusers.operator.normalize import canonical_quantity

    known = {
        "1024Mi": "1Gi",
        "1000m": "1",
        "20480Mi": "20Gi",
        "0.5Gi": "512Mi",
        "1.5": "1500m",
        "2000": "2k",
        "1536Mi": "1536Mi",
        "512Ki": "512Ki",
        "100m": "100m",
    }
    assert {k: canonical_quantity(k) for k in known} == known


QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "compute", "namespace": NS},
    "spec": {"hard": {"requests.cpu": "16", "requests.memory": "64Gi", "limits.memory": "64Gi"}},
}
RUNNER_RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}


def replica_failure(cluster: FakeCluster, name: str = "sd") -> dict[str, Any] | None:
    conds = ((deployment(cluster, name) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "ReplicaFailure" and c["status"] == "True"), None)


async def test_every_container_requests_what_a_quota_counts(cluster: FakeCluster, operator: Runtime) -> None:
    await call(cluster, "POST", f"/api/v1/namespaces/{NS}/resourcequotas", QUOTA)
    await create_pipeline(cluster, manifest(resources=RUNNER_RESOURCES))
    dep = await eventually(lambda: deployment(cluster))
    assert replica_failure(cluster) is None, replica_failure(cluster)
    fetch = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert set(fetch["resources"]["requests"]) == {"cpu", "memory"} and "memory" in fetch["resources"]["limits"]
    # The pod the ReplicaSet would create is admitted.
    pod = pod_for(dep, "sd-1", {})
    pod.pop("status")
    await call(cluster, "POST", PODS, pod)
    # Configurable in the CR.
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"fetchResources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": None}}})
    await eventually(lambda: runner_init(deployment(cluster))["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}, what="fetch resources")


def runner_init(dep: dict[str, Any] | None) -> dict[str, Any]:
    return (dep or {}).get("spec", {}).get("template", {}).get("spec", {}).get("initContainers", [{}])[0]


async def test_pods_a_quota_rejects_are_reported(cluster: FakeCluster, operator: Runtime) -> None:
    """A runner the quota refuses (no memory limit): the ReplicaSet cannot create pods; the status says so instead of waiting forever."""
    await call(cluster, "POST", f"/api/v1/namespaces/{NS}/resourcequotas", QUOTA)
    await create_pipeline(cluster, manifest(resources={"limits": {"nvidia.com/gpu": 1}}))
    status = await eventually(
        lambda: pipeline_status(cluster).get("reason") == "FailedCreate" and pipeline_status(cluster), what=lambda: str(pipeline_status(cluster))
    )
    assert status["phase"] == "Failed"
    # The operator's default requests cover cpu/memory requests; the quota here also wants limits.
    assert "failed quota: compute" in status["message"] and "for: runner" in status["message"]


async def test_rollout_strategy_follows_the_claim(cluster: FakeCluster, operator: Runtime) -> None:
    for name, modes in (("rwo", ["ReadWriteOnce"]), ("rwx", ["ReadWriteMany"])):
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}},
        }
        await call(cluster, "POST", CLAIMS, claim)
        await create_pipeline(cluster, manifest(name=f"p-{name}", storage={"existingClaim": name}))
    strategy = lambda name: ((deployment(cluster, name) or {}).get("spec") or {}).get("strategy")  # noqa: E731
    await eventually(lambda: strategy("p-rwo") and strategy("p-rwx"), what="both Deployments")
    assert strategy("p-rwo") == {"type": "Recreate"}  # the new pod could not mount a ReadWriteOnce claim the old one holds
    assert strategy("p-rwx") == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    # The CR may choose; switching drops rollingUpdate (the API server refuses it with Recreate).
    await call(cluster, "PATCH", f"{PIPELINES}/p-rwx", {"spec": {"rolloutStrategy": "Recreate"}})
    await eventually(lambda: strategy("p-rwx") == {"type": "Recreate"}, what=lambda: f"Recreate: {strategy('p-rwx')} {pipeline_status(cluster, 'p-rwx')}")


async def test_child_watches_are_filtered_by_the_api_server_and_paged(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest())
    await eventually(lambda: deployment(cluster))
    requests = [r for r in list(cluster) if r.resource is not None and r.resource.plural in ("pods", "deployments", "services", "persistentvolumeclaims")]
    watches = [r for r in requests if r.params.get("watch") == "true"]
    lists = [r for r in requests if r.method == "GET" and r.name is None and r.params.get("watch") != "true" and "fieldManager" not in r.params]
    assert watches and all(r.params.get("labelSelector") == f"{names.MANAGED_BY_LABEL}={names.MANAGER}" for r in watches), [r.params for r in watches]
    kopf_lists = [r for r in lists if "kubediffusers-operator" not in r.headers.get("User-Agent", "")]
    assert kopf_lists and all(r.params.get("limit") == "500" and r.params.get("labelSelector") for r in kopf_lists), [r.params for r in kopf_lists]


def chart_rules(drop_claim_delete: bool = False) -> list[dict[str, Any]]:
    from tests.chart.helpers import one, render

    rules = copy.deepcopy(one(render(), "ClusterRole")["rules"])
    if drop_claim_delete:
        for rule in rules:
            if "persistentvolumeclaims" in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != "delete"]
    return rules


def claim_owners(cluster: FakeCluster) -> list[str]:
    return [r["kind"] for r in ((obj(cluster, "v1/persistentvolumeclaims", "sd-models") or {}).get("metadata") or {}).get("ownerReferences") or []]


async def test_retain_means_no_owner_reference_under_owner_reference_enforcement(cluster: FakeCluster, operator: Runtime) -> None:
    cluster.rbac = chart_rules()  # the operator's requests are authorised as the chart's ClusterRole allows
    await create_pipeline(cluster, manifest())
    await eventually(lambda: claim_owners(cluster) == ["InferencePipeline"], what="owned claim")
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"deletePolicy": "Retain"}}})
    await eventually(lambda: obj(cluster, "v1/persistentvolumeclaims", "sd-models") and claim_owners(cluster) == [], what="owner reference removed")
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"deletePolicy": "Delete"}}})
    await eventually(lambda: claim_owners(cluster) == ["InferencePipeline"], what="owner reference back")
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"deletePolicy": "Retain"}}})
    await eventually(lambda: claim_owners(cluster) == [], what="owner reference removed again")
    await call(cluster, "DELETE", f"{PIPELINES}/sd")
    await eventually(lambda: deployment(cluster) is None, what="Deployment collected")
    assert obj(cluster, "v1/persistentvolumeclaims", "sd-models") is not None  # retained


async def test_owner_reference_changes_need_delete_on_the_claim(cluster: FakeCluster, operator: Runtime) -> None:
    """The emulator's OwnerReferencesPermissionEnforcement is real: without delete on claims the switch is refused, and said."""
    cluster.rbac = chart_rules(drop_claim_delete=True)
    await create_pipeline(cluster, manifest())
    await eventually(lambda: claim_owners(cluster) == ["InferencePipeline"], what="owned claim")
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"storage": {"deletePolicy": "Retain"}}})
    status = await eventually(
        lambda: "can't delete" in pipeline_status(cluster).get("message", "") and pipeline_status(cluster), what=lambda: str(pipeline_status(cluster))
    )
    assert claim_owners(cluster) == ["InferencePipeline"] and "PersistentVolumeClaim sd-models" in status["message"]


async def test_secret_key_check_can_be_skipped(cluster: FakeCluster) -> None:
    """Where policy forbids the operator reading Secrets: no Secret is read, the pipeline proceeds."""
    cluster.rbac = [r for r in chart_rules() if "secrets" not in r["resources"]]
    await create_pipeline(cluster, manifest(model={"id": "stabilityai/sd-turbo", "tokenSecretRef": {"name": "hf", "key": "token"}}))
    async with running_operator(check_secret_keys=False):
        await eventually(lambda: deployment(cluster), what="Deployment without reading the Secret")
    assert not [r for r in list(cluster) if r.resource is not None and r.resource.plural == "secrets"]


def test_run_as_user_can_be_left_to_openshift() -> None:
    from kubediffusers.operator.builders.deployment import build_pod_spec

    pod = build_pod_spec(Pipeline.from_manifest(manifest()), OperatorSettings(run_as_user=None))
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod["securityContext"]) and pod["securityContext"]["runAsNonRoot"] is True
    assert OperatorSettings.model_validate({"run_as_user": ""}).run_as_user is None  # the chart's empty value
