"""Helpers shared by the operator tests and the reliability harness (import as tests.operator.helpers)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import yaml

from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.fakecluster import CRD_RESOURCE, FakeCluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD_PATH = ROOT / "crds" / "inferencepipelines.yaml"
# An old supported Kubernetes and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.28", "1.37")


def manifest(name: str = "sd", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}}
    body.update(spec)
    return {
        "apiVersion": "kubediffusers.io/v1alpha1",
        "kind": "InferencePipeline",
        "metadata": {"name": name, "namespace": "ns1", "uid": "uid-1234", "generation": 1},
        "spec": body,
    }


def example_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every InferencePipeline in examples/*.yaml (other kinds, e.g. claims, are skipped)."""
    docs = [(f"{path.name}#{i}", doc) for path in EXAMPLES for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]
    return [(name, doc) for name, doc in docs if doc.get("kind") == "InferencePipeline"]


def to_jsonschema(node: Any) -> Any:
    """The CRD's structural schema as plain JSON Schema, as strict as the API server.

    nullable -> also null (but an enum still applies to null, as in the API server); objects with properties reject unknown fields (the API
    server would prune them silently, which hides typos; kubectl --validate=strict fails).
    """
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k != "nullable"}
    if "properties" in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        # nullable lets null past the type check only: the API server still applies enum to it.
        enum = out.pop("enum", None)
        out = {"anyOf": [out, {"type": "null"}]}
        if enum is not None:
            out["enum"] = enum
    return out


async def eventually(check: Callable[[], Any], timeout: float, what: Callable[[], str] | str = "", poll: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds saying what was awaited."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {timeout}s: {what() if callable(what) else what or check}")
        await asyncio.sleep(poll)


# ---- the kopf operator against the emulator (tests/operator/conftest.py has the fixtures)

NS = "ns1"
PIPELINES = f"/apis/kubediffusers.io/v1alpha1/namespaces/{NS}/inferencepipelines"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
CLAIMS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
PODS = f"/api/v1/namespaces/{NS}/pods"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
SHA = "89abcdef0123456789abcdef0123456789abcdef"
TIMEOUT = 15.0


async def call(cluster: FakeCluster, method: str, path: str, body: Any = None, content_type: str = "application/merge-patch+json") -> Any:
    headers = {"Content-Type": "application/json" if method == "POST" else content_type}
    async with cluster.request(method, path, json=body, headers=headers) as response:
        assert response.status < 400, (method, path, response.status, await response.text())
        return await response.json()


def obj(cluster: FakeCluster, resource: str, name: str) -> dict[str, Any] | None:
    try:
        found = cluster.objects[resource, NS, name]
    except KeyError:
        return None
    return None if found.deleted else copy.deepcopy(found.raw)


def pipeline_status(cluster: FakeCluster, name: str = "sd") -> dict[str, Any]:
    return (obj(cluster, CRD_RESOURCE, name) or {}).get("status") or {}


async def settle(check: Callable[[], Any], timeout: float = TIMEOUT, what: Callable[[], str] | str = "") -> Any:
    """``eventually`` with the operator tests' timeout."""
    return await eventually(check, timeout, what)


def deployment(cluster: FakeCluster, name: str = "sd") -> dict[str, Any] | None:
    return obj(cluster, "apps/v1/deployments", name)


def events(cluster: FakeCluster) -> list[dict[str, Any]]:
    return [o.raw for (res, _, _), o in cluster.objects.items() if res == "v1/events" and not o.deleted]


def runner_image(dep: dict[str, Any] | None) -> str | None:
    return None if dep is None else dep["spec"]["template"]["spec"]["containers"][0]["image"]


def pod_for(dep: dict[str, Any], name: str, status: dict[str, Any]) -> dict[str, Any]:
    template = dep["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, **copy.deepcopy(template["metadata"])},
        "spec": template["spec"],
        "status": status,
    }


async def create_pipeline(cluster: FakeCluster, doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for key in ("uid", "generation"):
        doc["metadata"].pop(key, None)
    return await call(cluster, "POST", PIPELINES, doc)


@contextlib.asynccontextmanager
async def running_operator(**overrides: Any) -> AsyncIterator[Runtime]:
    """The operator in its own thread and event loop, as in a real process (KUBECONFIG from the ``cluster`` fixture).

    (In the test's own loop, kopf's shutdown would wait for the test's tasks as "hung".)
    """
    options: dict[str, Any] = {"standalone": True, "resync_seconds": 1.0, "retry_seconds": 0.1, "liveness_endpoint": None, "runner_image": "runner:test"}
    runtime = Runtime(OperatorSettings(**(options | overrides)))
    stop, ready = threading.Event(), threading.Event()
    coro = kopf.operator(clusterwide=True, memo=kopf.Memo(runtime=runtime), stop_flag=stop, ready_flag=ready)
    thread = threading.Thread(target=asyncio.run, args=(coro,), name="kopf-operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, TIMEOUT), "the operator did not start"
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, TIMEOUT)
        assert not thread.is_alive(), "the operator did not stop"


# ---- KEDA's objects, validated against the CRD schemas of the KEDA releases in tests/operator/data

DATA = Path(__file__).resolve().parent / "data"
KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): DATA / "keda-scaledobjects.yaml",
    ("http.keda.sh/v1alpha1", "HTTPScaledObject"): DATA / "keda-http-httpscaledobjects.yaml",
}
_keda_validators: dict[tuple[str, str], Any] = {}


def keda_validator(api_version: str, kind: str) -> Any:
    import jsonschema

    key = (api_version, kind)
    if key not in _keda_validators:
        schema = yaml.safe_load(KEDA_SCHEMAS[key].read_text())["openAPIV3Schema"]
        _keda_validators[key] = jsonschema.Draft202012Validator(to_jsonschema(schema))
    return _keda_validators[key]


def _cel_rules(obj: dict[str, Any]) -> list[str]:
    """The CRDs' x-kubernetes-validations (CEL) that jsonschema cannot run, written out."""
    errors = []
    if obj["kind"] == "HTTPScaledObject":
        for path in ("scaleTargetRef", "coldStartTimeoutFailoverRef"):
            ref = obj["spec"].get(path)
            if ref is not None and ("portName" in ref) == ("port" in ref):
                errors.append(f"spec.{path}: must define either the 'portName' or the 'port'")
    return errors


def validate_keda(obj: dict[str, Any]) -> None:
    """Raise unless ``obj`` is a valid KEDA object, as strict as the API server with the CRD installed."""
    keda_validator(obj["apiVersion"], obj["kind"]).validate(obj)
    assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", obj["metadata"]["name"]), obj["metadata"]["name"]
    assert not _cel_rules(obj), _cel_rules(obj)


def validate_object(obj: dict[str, Any], version: str) -> None:
    """Kubernetes' own kinds against its OpenAPI schemas, KEDA's against their CRDs."""
    if (obj.get("apiVersion"), obj.get("kind")) in KEDA_SCHEMAS:
        validate_keda(obj)
    else:
        import kubernetes_validate

        kubernetes_validate.validate(obj, version, strict=True)
