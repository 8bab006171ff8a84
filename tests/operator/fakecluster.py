"""KMock's Kubernetes emulator plus the few API-server behaviours the operator relies on.

KMock stores, merges, serves and streams objects. A real API server also stamps
uid/generation/creationTimestamp, turns generateName into a name,
and its garbage collector deletes objects whose owners are gone; these are added
here so the tests can observe them. Like a real API server (and unlike bare KMock, which
stores whatever is posted), it answers 404 for resources it does not serve, e.g. KEDA's
until ``register_keda`` installs them. What stays out (see docs/operator.md): admission,
optimistic concurrency (resourceVersion stays "1"), schema validation and defaulting, real server-side-apply field ownership, controllers
(Deployment -> ReplicaSet -> Pods, the kubelet); tests play the controllers' part by
writing pods and statuses through the API.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import kmock
from kmock._internal import dicts, enums

CRD_RESOURCE = "kubediffusers.io/v1alpha1/inferencepipelines"


class FakeCluster(kmock.KubernetesEmulator):
    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource.plural and request.resource not in self._resources:  # declared ones only
            # The API server's answer for a resource no CRD or built-in defines.
            raise kmock.KubernetesError(status=404, reason="NotFound", message="the server could not find the requested resource")
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                # Constant: kopf's JSON patches "test" it; bumping it would need the full
                # optimistic-concurrency dance (409 + re-read) that KMock does not emulate.
                meta["resourceVersion"] = "1"
                meta.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            elif request.action == enums.action.UPDATE and request.name:
                key = (request.resource, request.namespace, request.name)
                if key in self._objects and not self._objects[key].deleted:
                    current = self._objects[key].raw
                    merged = dicts.patch_dict(current, data)
                    if request.subresource != "status" and merged.get("spec") != current.get("spec"):
                        meta["generation"] = int((current.get("metadata") or {}).get("generation") or 1) + 1
        response = await super()._handle(request)
        if request.action in (enums.action.DELETE, enums.action.UPDATE):
            await self._collect_garbage()
        return response

    async def _collect_garbage(self) -> None:
        """Delete objects whose owners are all gone (cascading, like the real collector)."""
        while True:
            async with self._lock:
                live = {(obj.raw.get("metadata") or {}).get("uid") for _, obj in self._objects.items() if not obj.deleted}
                orphans = [
                    (key, obj)
                    for key, obj in self._objects.items()
                    if not obj.deleted and (refs := (obj.raw.get("metadata") or {}).get("ownerReferences")) and not any(ref.get("uid") in live for ref in refs)
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


def register_resources(cluster: FakeCluster) -> None:
    cluster.resources.load_bundled()
    cluster.resources[CRD_RESOURCE] = kmock.ResourceInfo(
        kind="InferencePipeline",
        singular="inferencepipeline",
        namespaced=True,
        shortnames={"ipl"},
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        subresources={"status", "scale"},
    )


KEDA_RESOURCE = "keda.sh/v1alpha1/scaledobjects"
KEDA_HTTP_RESOURCE = "http.keda.sh/v1alpha1/httpscaledobjects"


def register_keda(cluster: FakeCluster, *, http_add_on: bool = True) -> None:
    """What installing KEDA (and its HTTP add-on) adds to the API: their CRDs' resources."""
    verbs = {"create", "delete", "get", "list", "patch", "update", "watch"}
    cluster.resources[KEDA_RESOURCE] = kmock.ResourceInfo(
        kind="ScaledObject", singular="scaledobject", namespaced=True, shortnames={"so"}, verbs=verbs, subresources={"status"}
    )
    if http_add_on:
        cluster.resources[KEDA_HTTP_RESOURCE] = kmock.ResourceInfo(
            kind="HTTPScaledObject", singular="httpscaledobject", namespaced=True, shortnames={"httpso"}, verbs=verbs, subresources={"status"}
        )
