"""The CRD: generated from the spec model, current, structural, documented, and the examples validate."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubediffusers.operator.crd import build_crd
from kubediffusers.operator.crd_docs import render_fields
from kubediffusers.operator.spec import InferencePipelineSpec, InferencePipelineStatus
from tests.operator.helpers import CRD_PATH, K8S_VERSIONS, ROOT, example_docs


def test_crd_file_is_generated_from_the_spec_model() -> None:
    assert yaml.safe_load(CRD_PATH.read_text()) == build_crd(), "crds/ is stale: run .venv/bin/python hack/gen_crd.py"


def test_generator_check_mode_agrees() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "hack" / "gen_crd.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docs_field_reference_is_current(crd: dict[str, Any]) -> None:
    assert render_fields(crd) in (ROOT / "docs" / "crd.md").read_text(), "docs/crd.md is stale: run hack/gen_crd.py"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_crd_is_a_valid_kubernetes_object(crd: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(crd, version, strict=True)


def _walk(schema: dict[str, Any], path: str = ""):  # type: ignore[no-untyped-def]
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural_and_documented(crd: dict[str, Any]) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for top in ("spec", "status"):
        for path, node in _walk(root["properties"][top], top):
            assert "$ref" not in node and "title" not in node and "$defs" not in node, path
            assert not isinstance(node.get("additionalProperties"), bool), path
            if "anyOf" in node:  # only the int-or-string quantities
                assert node.get("x-kubernetes-int-or-string") and "type" not in node, path
            else:
                assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
            if not path.endswith("{}") and not path.endswith("[]"):
                assert node.get("description"), f"{path} has no description"
            if node.get("type") == "object":
                assert node.get("properties") or node.get("additionalProperties") or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_every_model_field_is_in_the_schema(crd: dict[str, Any]) -> None:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert set(root["spec"]["properties"]) == {f.alias for f in InferencePipelineSpec.model_fields.values()}
    assert set(root["status"]["properties"]) == {f.alias for f in InferencePipelineStatus.model_fields.values()}


def test_names_subresources_and_columns(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "inferencepipelines.kubediffusers.io"
    assert spec["group"] == "kubediffusers.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "InferencePipeline" and spec["names"]["shortNames"] == ["ipl"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Task", "Model", "Ready", "Phase", "Reason", "Age", "URL"]
    assert columns["URL"]["priority"] == 1 and all("priority" not in c for n, c in columns.items() if n != "URL")
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns.values():  # every column points at a real field
        node = schema
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part] if part != "creationTimestamp" else {"type": "string"}
    replicas = schema["properties"]["spec"]["properties"]["replicas"]
    assert replicas["type"] == "integer" and replicas["minimum"] == 0 and replicas["default"] == 1


def test_enums_and_bounds(crd: dict[str, Any]) -> None:
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec = node["properties"]
    assert spec["task"]["enum"] == ["text-to-image", "image-to-image", "inpainting", "image-to-video", "upscale", "image-variation", "text-to-video"]
    assert spec["model"]["properties"]["dtype"]["enum"] == ["float16", "bfloat16", "float32", None]  # nullable: null listed
    assert spec["storage"]["properties"]["deletePolicy"]["enum"] == ["Delete", "Retain"]
    assert spec["storage"]["properties"]["size"]["x-kubernetes-int-or-string"] is True
    assert spec["service"]["properties"]["port"]["maximum"] == 65535
    assert node["required"] == ["task", "model"]
    timeout = spec["runner"]["properties"]["requestTimeoutSeconds"]
    assert timeout["minimum"] == 0 and timeout["exclusiveMinimum"] is True  # OpenAPI v3.0 form


@pytest.mark.parametrize(("name", "doc"), example_docs(), ids=[n for n, _ in example_docs()])
def test_examples_validate_against_the_crd(crd_validator: Any, name: str, doc: dict[str, Any]) -> None:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator.iter_errors(doc)]
    assert not errors, errors
    InferencePipelineSpec.model_validate(doc["spec"])  # and the operator's own parser agrees


@pytest.mark.parametrize(
    "bad",
    [
        {"task": "painting", "model": {"id": "a/b"}},
        {"task": "upscale"},
        {"task": "upscale", "model": {"id": "a/b"}, "replicas": -1},
        {"task": "upscale", "model": {"id": "a/b", "dtype": "float8"}},
        {"task": "upscale", "model": {"id": "a/b"}, "storage": {"size": "lots"}},
        {"task": "upscale", "model": {"id": "a/b"}, "replica": 2},
        {"task": "upscale", "model": {"id": "a/b"}, "service": {"port": 70000}},
        # Negative quantities fail at admission, not later in the operator.
        {"task": "upscale", "model": {"id": "a/b"}, "storage": {"size": "-1Gi"}},
        {"task": "upscale", "model": {"id": "a/b"}, "resources": {"limits": {"memory": "-8Gi"}}},
        {"task": "upscale", "model": {"id": "a/b"}, "resources": {"requests": {"cpu": -1}}},
        {"task": "upscale", "model": {"id": "a/b"}, "fetchResources": {"requests": {"memory": "-1"}}},
    ],
)
def test_crd_and_model_reject_the_same_bad_specs(crd_validator: Any, bad: dict[str, Any]) -> None:
    doc = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "x"}, "spec": bad}
    assert list(crd_validator.iter_errors(doc))
    with pytest.raises(ValueError):
        InferencePipelineSpec.model_validate(bad)


@pytest.mark.parametrize(
    "spec",
    [
        {"task": "upscale", "model": {"id": "a/b", "dtype": None}},
        {"task": "upscale", "model": {"id": "a/b"}, "tolerations": [{"key": "gpu", "operator": None, "effect": None}]},
    ],
)
def test_explicit_nulls_pass_the_enum_check(crd_validator: Any, spec: dict[str, Any]) -> None:
    """kubectl apply of a spec with ``dtype: null`` (a templating tool's "unset"): the API server runs enum on the null."""
    doc = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "x"}, "spec": spec}
    assert not list(crd_validator.iter_errors(doc))
    InferencePipelineSpec.model_validate(spec)


def test_read_write_once_pod_alone() -> None:
    with pytest.raises(ValueError, match="ReadWriteOncePod cannot be combined"):
        InferencePipelineSpec.model_validate({"task": "upscale", "model": {"id": "a/b"}, "storage": {"accessModes": ["ReadWriteOncePod", "ReadWriteMany"]}})


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kopf_peering_crds_are_valid(version: str) -> None:
    docs = list(yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text()))
    assert {d["spec"]["names"]["kind"] for d in docs} == {"ClusterKopfPeering", "KopfPeering"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
