"""Helpers shared by the operator tests (imported by name: tests/operator is on sys.path)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

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

    nullable -> also null; objects with properties reject unknown fields (the API
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
        out = {"anyOf": [out, {"type": "null"}]}
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
