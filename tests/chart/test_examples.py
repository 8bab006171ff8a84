"""Every manifest under examples/ (subfolders included) is valid: InferencePipelines
against the CRD and the operator's own parser, everything else against Kubernetes'
schemas; together they cover the scenarios a new user looks for."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubediffusers.operator.spec import InferencePipelineSpec
from tests.operator.helpers import to_jsonschema

from .helpers import ROOT, validate

EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
DOCS = [(f"{p.relative_to(ROOT / 'examples')}#{i}", doc) for p in EXAMPLES for i, doc in enumerate(yaml.safe_load_all(p.read_text())) if doc]
PIPELINES = [doc for _, doc in DOCS if doc.get("kind") == "InferencePipeline"]
CRD = yaml.safe_load((ROOT / "crds" / "inferencepipelines.yaml").read_text())
VALIDATOR = jsonschema.Draft202012Validator(to_jsonschema(copy.deepcopy(CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"])))


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[n for n, _ in DOCS])
def test_every_example_is_valid(name: str, doc: dict[str, Any]) -> None:
    if doc.get("kind") == "InferencePipeline":
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]
        assert not errors, errors
        InferencePipelineSpec.model_validate(doc["spec"])
    else:
        validate(doc, "1.33")


def test_examples_can_be_applied_together() -> None:
    """Unique names per kind, and no namespace baked in (kubectl -n decides)."""
    counts = Counter((doc["kind"], doc["metadata"]["name"]) for _, doc in DOCS)
    assert [key for key, n in counts.items() if n > 1] == []
    assert [name for name, doc in DOCS if "namespace" in doc["metadata"]] == []


def test_every_existing_claim_in_the_examples_is_provided_as_a_manifest() -> None:
    claims = {doc["metadata"]["name"]: doc for _, doc in DOCS if doc["kind"] == "PersistentVolumeClaim"}
    for pipeline in PIPELINES:
        wanted = (pipeline["spec"].get("storage") or {}).get("existingClaim")
        if wanted:
            assert wanted in claims, f"{pipeline['metadata']['name']} uses claim {wanted!r}, which no example creates"


def test_the_examples_cover_what_the_issue_lists() -> None:
    tasks = {p["spec"]["task"] for p in PIPELINES}
    assert {"text-to-image", "image-to-image", "inpainting", "image-to-video", "upscale"} <= tasks
    models = {p["spec"]["model"]["id"] for p in PIPELINES}
    assert {
        "stabilityai/sd-turbo",
        "stabilityai/sdxl-turbo",
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "stabilityai/stable-diffusion-x4-upscaler",
    } <= models
    assert any((p["spec"]["model"].get("tokenSecretRef") or {}).get("name") for p in PIPELINES), "no gated model with a token Secret"
    shared = Counter((p["spec"].get("storage") or {}).get("existingClaim") for p in PIPELINES)
    shared.pop(None, None)
    claim = next(name for name, n in shared.items() if n >= 2)  # two pipelines on one claim
    pvc = next(d for _, d in DOCS if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    quickstart = yaml.safe_load((ROOT / "examples" / "sd-turbo.yaml").read_text())
    assert quickstart["metadata"]["name"] == "sd-turbo" and quickstart["spec"]["task"] == "text-to-image"


def test_claims_folder_is_outside_the_top_level_glob() -> None:
    """tests/operator validates examples/*.yaml as InferencePipelines only: other kinds live in subfolders."""
    for path in (ROOT / "examples").glob("*.yaml"):
        kinds = {doc.get("kind") for doc in yaml.safe_load_all(path.read_text()) if doc}
        assert kinds == {"InferencePipeline"}, f"{path.name}: {kinds}"
    assert Path(ROOT / "examples" / "claims" / "shared-model-cache.yaml").exists()
