"""The committed OpenAPI document matches the code."""

from __future__ import annotations

import json
from pathlib import Path

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
