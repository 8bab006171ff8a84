"""RBAC is least privilege: the rendered rules equal the declared list
(kubediffusers.operator.permissions), the list covers what the code watches and
builds, and every request the real operator makes to an emulated API server is
allowed, while every declared permission is used by it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import kopf
import pytest
import yaml

import kubediffusers.operator.handlers  # noqa: F401  (registers the handlers with kopf)
from kubediffusers.operator import permissions
from kubediffusers.operator.builders import build_children
from kubediffusers.operator.kube import _PLURALS
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.spec import GROUP, PLURAL, VERSION
from tests.operator.fakecluster import FakeCluster

from .helpers import NAMESPACE, NON_DEFAULT, one, render

Permission = tuple[str, str, str]  # (api group, resource[/subresource], verb)
FORBIDDEN_VERBS = {"*", "delete", "deletecollection", "escalate", "bind", "impersonate", "update"}
# Declared but never exercised against the emulator: the API server asks for it only
# with the OwnerReferencesPermissionEnforcement admission plugin (blockOwnerDeletion).
NOT_TRACEABLE: set[Permission] = {(GROUP, f"{PLURAL}/finalizers", "update"), ("", "persistentvolumeclaims", "delete")}
SA = "kd-kubediffusers"
_versions = itertools.count(1)


def flatten(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def rbac(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io/")]


# ---- rendered rules == declared rules


def test_cluster_mode_rules_are_the_declared_ones() -> None:
    objects = render()
    assert {o["kind"] for o in rbac(objects)} == {"ClusterRole", "ClusterRoleBinding"}
    assert one(objects, "ClusterRole")["rules"] == permissions.cluster_rules(cluster_wide=True, peering=True)
    standalone = render({"peering": {"enabled": False}})
    assert one(standalone, "ClusterRole")["rules"] == permissions.cluster_rules(cluster_wide=True, peering=False)


def test_namespaced_mode_rules_are_the_declared_ones() -> None:
    objects = render(NON_DEFAULT)
    assert one(objects, "ClusterRole")["rules"] == permissions.cluster_rules(cluster_wide=False, peering=True)
    standalone = render({**NON_DEFAULT, "peering": {"enabled": False}})
    for namespace in NON_DEFAULT["watch"]["namespaces"]:
        assert one(objects, "Role", namespace)["rules"] == permissions.namespace_rules(peering=True)
        assert one(standalone, "Role", namespace)["rules"] == permissions.namespace_rules(peering=False)
        binding = one(objects, "RoleBinding", namespace)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "diffusers-operator", "namespace": NAMESPACE}]
    # Nothing about pipelines or their children is granted cluster-wide in namespaced mode.
    cluster = flatten(one(objects, "ClusterRole")["rules"])
    assert {r for _, r, _ in cluster} == {"customresourcedefinitions", "namespaces"}
    assert {v for *_, v in cluster} == {"list", "watch"}


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["cluster", "namespaced"])
def test_no_wildcards_no_deletes_no_escalation(values: dict[str, Any]) -> None:
    objects = render(values)
    for obj in rbac(objects):
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no nonResourceURLs, no resourceNames games
                assert "*" not in rule["apiGroups"] + rule["resources"]
                verbs = set(rule["verbs"]) - ({"update"} if rule["resources"] == [f"{PLURAL}/finalizers"] else set())
                # OwnerReferencesPermissionEnforcement: changing a claim's owner reference (deletePolicy Delete <-> Retain)
                # needs delete on it; the operator never sends a DELETE (the emulator tests check both, tests/operator).
                verbs -= {"delete"} if rule["resources"] == ["persistentvolumeclaims"] else set()
                assert not verbs & FORBIDDEN_VERBS, rule
        else:
            assert obj["roleRef"]["name"] == SA  # only our own roles: never cluster-admin, edit, ...


# ---- declared rules cover what the code watches and builds


def test_declared_rules_cover_every_resource_kopf_watches() -> None:
    granted = flatten(permissions.namespace_rules())
    registry = kopf.get_default_registry()
    selectors = [h.selector for h in registry._watching.get_all_handlers()] + [h.selector for h in registry._spawning.get_all_handlers()]
    assert selectors, "no kopf handlers registered"
    for selector in selectors:
        assert selector is not None
        plural = selector.plural or selector.any_name
        assert plural
        for verb in ("list", "watch"):
            assert (selector.group or "", plural, verb) in granted, (selector, verb)
    # Daemons put a finalizer on the pipeline: kopf patches it.
    assert (GROUP, PLURAL, "patch") in granted


def test_declared_rules_cover_every_kind_the_builders_make() -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePipeline",
        "metadata": {"name": "sd", "namespace": "ns1", "uid": "u-1"},
        "spec": {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}},
    }
    children = build_children(Pipeline.from_manifest(body), OperatorSettings())
    granted = flatten(permissions.namespace_rules())
    assert {c["kind"] for c in children} == {"PersistentVolumeClaim", "Deployment", "Service"}
    body["spec"]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 2, "prometheusAddress": "http://prom:9090"}
    children += build_children(Pipeline.from_manifest(body), OperatorSettings())
    assert {c["kind"] for c in children} >= {"ScaledObject", "HTTPScaledObject"}
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        for verb in ("get", "create", "patch"):  # apply.py: get, create when missing, server-side apply when drifted
            assert (group, _PLURALS[child["kind"]], verb) in granted, (child["kind"], verb)


# ---- the real operator against an emulated API server: every request is allowed, every rule is used


class Recorder(FakeCluster):
    """The operator tests' emulator (server-side apply included), stamping uids and names the way
    an API server does, and answering /api/v1/namespaces itself (KMock cannot parse that path)."""

    namespace_requests: list[tuple[str, str]]  # (verb, Authorization header)
    apply_creates: set[int]  # ids of apply requests that created their object: the API server checks create too

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.path.rstrip("/") != "/api/v1/namespaces":
            return await super().__call__(raw_request)
        watch = raw_request.query.get("watch") in ("true", "1")
        self.namespace_requests.append(("watch" if watch else "list", raw_request.headers.get("Authorization", "")))
        if not watch:
            items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}}]
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items})
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.Event().wait()  # an idle watch until the server closes
        return response  # pragma: no cover

    async def _handle(self, request: kmock.Request) -> Any:
        if request.method == "PATCH" and request.headers.get("Content-Type", "").startswith("application/apply-patch") and request.resource is not None:
            key = (request.resource, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                self.apply_creates.add(id(request))
        if request.method in ("POST", "PATCH", "PUT") and isinstance(request.data, dict) and request.resource is not None:
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(_versions))  # kopf tells changes apart by resourceVersion
            if request.method == "POST":
                meta.setdefault("uid", str(uuid.uuid4()))
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        return await super()._handle(request)


@contextlib.asynccontextmanager
async def emulated_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Recorder]:
    async with Recorder() as fake, kmock.Server(fake):
        fake.namespace_requests = []
        fake.apply_creates = set()
        fake.resources.load_bundled()
        for plural, kind, namespaced in (("clusterkopfpeerings", "ClusterKopfPeering", False), ("kopfpeerings", "KopfPeering", True)):
            fake.resources[f"kopf.dev/v1/{plural}"] = kmock.ResourceInfo(
                kind=kind, singular=kind.lower(), namespaced=namespaced, verbs={"create", "get", "list", "patch", "watch"}
            )
        # KEDA and its HTTP add-on, installed (spec.autoscaling).
        for resource, kind in (("keda.sh/v1alpha1/scaledobjects", "ScaledObject"), ("http.keda.sh/v1alpha1/httpscaledobjects", "HTTPScaledObject")):
            fake.resources[resource] = kmock.ResourceInfo(kind=kind, singular=kind.lower(), namespaced=True, verbs={"create", "get", "list", "patch", "watch"})
        fake.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = kmock.ResourceInfo(
            kind="InferencePipeline",
            singular="inferencepipeline",
            namespaced=True,
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            subresources={"status", "scale"},
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(fake.url).rstrip("/")}}],
            "users": [{"name": "operator", "user": {"token": "operator-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
            "current-context": "kmock",
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake


async def call(fake: Recorder, method: str, path: str, body: Any) -> None:
    content_type = "application/json" if method == "POST" else "application/merge-patch+json"
    async with fake.request(method, path, json=body, headers={"Content-Type": content_type}) as response:
        assert response.status < 400, await response.text()


VERBS = {"FETCH": "get", "LIST": "list", "WATCH": "watch", "CREATE": "create", "DELETE": "delete"}


def operator_requests(fake: Recorder) -> list[tuple[str | None, Permission]]:
    """(namespace, permission) of each API request the operator made (the test's own carry no token)."""
    out = []
    for request in list(fake._requests):
        if "operator-token" not in request.headers.get("Authorization", ""):
            continue
        if request.resource is None or not request.resource.plural:
            assert request.method == "GET", request  # discovery (/api, /apis/...): open to every authenticated user
            continue
        action = request.action.name if request.action is not None else ""
        verb = {"PATCH": "patch", "PUT": "update"}.get(request.method.name, "") if action == "UPDATE" else VERBS[action]
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        out.append((request.namespace, (request.resource.group or "", resource, verb)))
        if id(request) in fake.apply_creates:
            out.append((request.namespace, (request.resource.group or "", resource, "create")))
    out += [(None, ("", "namespaces", verb)) for verb, auth in fake.namespace_requests if "operator-token" in auth]
    return out


def allowed(objects: list[dict[str, Any]], namespace: str | None, permission: Permission) -> bool:
    cluster = {o["metadata"]["name"]: flatten(o["rules"]) for o in objects if o["kind"] == "ClusterRole"}
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]): flatten(o["rules"]) for o in objects if o["kind"] == "Role"}
    for binding in objects:
        if binding["kind"] == "ClusterRoleBinding" and permission in cluster.get(binding["roleRef"]["name"], set()):
            return True
        if (
            binding["kind"] == "RoleBinding"
            and binding["metadata"]["namespace"] == namespace
            and permission in roles.get((namespace, binding["roleRef"]["name"]), set())
        ):
            return True
    return False


async def run_operator_through_a_lifecycle(fake: Recorder, namespaces: list[str], peering: list[dict[str, Any]]) -> None:
    """Start the operator as the chart configures it, then create, then change pipelines."""
    for obj in peering:  # what the chart installs before the operator starts
        plural = obj["kind"].lower() + "s"
        where = f"/namespaces/{obj['metadata']['namespace']}" if "namespace" in obj["metadata"] else ""
        await call(fake, "POST", f"/apis/kopf.dev/v1{where}/{plural}", obj)
    settings = OperatorSettings(
        standalone=not peering, peering_name="kubediffusers", resync_seconds=0.5, retry_seconds=0.1, liveness_endpoint=None, namespaces=namespaces
    )
    ready = asyncio.Event()
    task = asyncio.create_task(kopf.operator(clusterwide=not namespaces, namespaces=namespaces, memo=kopf.Memo(runtime=Runtime(settings)), ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        ns = "ns1"
        pipelines = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}"
        await call(
            fake, "POST", f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "data": {"token": "eA=="}}
        )
        sd = {"task": "text-to-image", "model": {"id": "a/sd", "tokenSecretRef": {"name": "hf", "key": "token"}}, "networkPolicy": {"enabled": True}}
        await call(fake, "POST", pipelines, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePipeline", "metadata": {"name": "sd"}, "spec": sd})
        up = {"task": "upscale", "model": {"id": "a/up"}, "storage": {"existingClaim": "shared"}}
        await call(fake, "POST", pipelines, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePipeline", "metadata": {"name": "up"}, "spec": up})
        # Scale to zero: a ScaledObject and an HTTPScaledObject.
        auto = {
            "task": "text-to-image",
            "model": {"id": "a/auto"},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 2, "prometheusAddress": "http://prom:9090"},
        }
        await call(fake, "POST", pipelines, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferencePipeline", "metadata": {"name": "auto"}, "spec": auto})

        def seen(*wanted: tuple[str, str]) -> bool:
            done = {(resource, verb) for _, (_, resource, verb) in operator_requests(fake)}
            return all(w in done for w in wanted)

        first = [("deployments", "create"), (f"{PLURAL}/status", "patch"), ("events", "create"), ("scaledobjects", "create"), ("httpscaledobjects", "create")]
        first += [(o["kind"].lower() + "s", "patch") for o in peering]  # kopf's keep-alive in the peering object
        await eventually(lambda: seen(*first), what=lambda: sorted({p for _, p in operator_requests(fake)}))
        # A spec change re-applies every child (server-side apply: patch).
        change = {
            "spec": {"model": {"revision": "v2"}, "service": {"port": 8080}, "storage": {"size": "30Gi"}, "networkPolicy": {"allowedNamespaces": ["gateway"]}}
        }
        await call(fake, "PATCH", f"{pipelines}/sd", change)
        await call(fake, "PATCH", f"{pipelines}/auto", {"spec": {"autoscaling": {"maxReplicas": 3}}})
        # A runner pod that does not start: the operator lists Warning events to say why.
        labels = {
            "app.kubernetes.io/name": "kubediffusers-runner",
            "app.kubernetes.io/instance": "sd",
            "app.kubernetes.io/managed-by": "kubediffusers-operator",
        }
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sd-1", "labels": labels}, "spec": {"containers": [{"name": "runner", "image": "x:1"}]}}
        await call(fake, "POST", f"/api/v1/namespaces/{ns}/pods", pod)
        await eventually(
            lambda: seen(
                ("deployments", "patch"),
                ("services", "patch"),
                ("persistentvolumeclaims", "patch"),
                ("networkpolicies", "patch"),
                ("scaledobjects", "patch"),
                ("httpscaledobjects", "patch"),
                ("events", "list"),
            ),
            what=lambda: sorted({p for _, p in operator_requests(fake)}),
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)


async def eventually(check: Any, timeout: float = 15.0, what: Any = None) -> None:
    deadline = time.monotonic() + timeout  # wall time: the tests' event loop may run on fake time (looptime)
    while not check():
        assert time.monotonic() < deadline, f"the operator did not get there in time; so far: {what() if what else ''}"
        await asyncio.sleep(0.05)


MODES = {"cluster": ({}, []), "namespaced": ({"watch": {"scope": "namespaced", "namespaces": ["ns1"]}}, ["ns1"])}


@pytest.mark.slow
@pytest.mark.parametrize(("values", "namespaces"), MODES.values(), ids=MODES.keys())
async def test_every_request_of_the_real_operator_is_allowed_and_every_rule_is_used(
    values: dict[str, Any], namespaces: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("KUBEDIFFUSERS_OPERATOR_"):
            monkeypatch.delenv(key)
    objects = render(values)
    peering = [o for o in objects if o["apiVersion"] == "kopf.dev/v1"]
    assert len(peering) == 1
    async with emulated_cluster(tmp_path, monkeypatch) as fake:
        await run_operator_through_a_lifecycle(fake, namespaces, peering)
        requests = operator_requests(fake)
    denied = sorted({(ns, p) for ns, p in requests if not allowed(objects, ns, p)}, key=str)
    assert not denied, f"the rendered RBAC would forbid: {denied}"
    declared = flatten(permissions.cluster_rules(cluster_wide=not namespaces, peering=True))
    declared |= flatten(permissions.namespace_rules(peering=True) if namespaces else [])
    unused = declared - {p for _, p in requests} - NOT_TRACEABLE
    assert not unused, f"declared but never used by the operator: {sorted(unused)}"
