"""The committed OpenAPI document matches the code."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from kubediffusers.runner.openapi import build_openapi, render_openapi

COMMITTED = Path(__file__).resolve().parents[2] / "runner" / "openapi.json"


def test_committed_openapi_is_up_to_date() -> None:
    assert COMMITTED.read_text() == render_openapi(), "runner/openapi.json is stale: run `make openapi`"


def test_every_parameter_is_described() -> None:
    doc = build_openapi()
    for name, schema in doc["components"]["schemas"].items():
        if not name.endswith("Params") and not name.startswith("Body_"):
            continue
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_errors_are_documented_with_their_shape() -> None:
    doc = build_openapi()
    op = doc["paths"]["/text-to-image"]["post"]
    assert {"400", "422", "503", "504"} <= set(op["responses"])
    assert json.dumps(op["responses"]["503"]).count("HTTPError") == 1


def test_every_documented_422_is_what_the_routes_answer(t2i) -> None:  # type: ignore[no-untyped-def]
    """Every operation that can fail validation documents the bounded FastAPI list it
    answers (issue 12, point 11); FastAPI's own default schema, which would claim
    'input' and 'ctx' and no bound, is not used anywhere."""
    doc = build_openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    documented = {}
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in op["responses"], f"{method.upper()} {path} does not document its 422"
            if "422" in op["responses"]:
                ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ValidationErrors", (path, method, ref)
                documented[(method, path)] = ref
    schema = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/ValidationErrors", "components": doc["components"]})
    answers = {
        ("post", "/text-to-image"): t2i.post("/text-to-image", json={"prompt": 1, "seed": "x", **{f"k{i}": 0 for i in range(30)}}),
        ("get", "/jobs/{job_id}"): t2i.get("/jobs/" + "x" * 65),
        ("get", "/jobs/{job_id}/result"): t2i.get("/jobs/" + "x" * 65 + "/result"),
        ("delete", "/jobs/{job_id}"): t2i.delete("/jobs/" + "x" * 65),
        ("post", "/api/v1/stable-diffusion"): t2i.post("/api/v1/stable-diffusion", json={"Total": "many"}),
    }
    for key, r in answers.items():
        assert key in documented and r.status_code == 422, (key, r.status_code, r.text[:200])
        schema.validate(r.json())
    assert len(answers[("post", "/text-to-image")].json()["detail"]) == 20
