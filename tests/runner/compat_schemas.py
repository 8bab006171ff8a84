"""The other projects' schemas the compatibility tests validate every answer against.

livepeer ai-runner: its own OpenAPI document (livepeer_openapi.yaml beside this
file; repository livepeer/ai-runner, tag v0.14.1, runner/openapi.yaml).
PICO: it publishes no OpenAPI document, so its models are written here as JSON
Schema from its source (repository Exoscape/pico, commit baeebc3,
API/PicoResponse.py, ImageLayer.py, Models/StableDiffusion.py for the
attributes, API/PicoAPI.py for health and errors), as strict as its code:
exactly the keys it writes, no others.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml

LIVEPEER_SPEC_PATH = Path(__file__).with_name("livepeer_openapi.yaml")


@cache
def livepeer_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(LIVEPEER_SPEC_PATH.read_text())
    return spec


def _validator(schema: dict[str, Any], components: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # $refs are '#/components/schemas/X': resolve them against a root holding the components.
    return jsonschema.Draft202012Validator({**schema, "components": components})


def livepeer_operation(path: str, method: str = "post") -> dict[str, Any]:
    operation: dict[str, Any] = livepeer_spec()["paths"][path.rstrip("/") or "/"][method]
    return operation


def livepeer_request_schema(path: str) -> dict[str, Any]:
    """The request body schema of a livepeer route (JSON or multipart), with its $ref resolved."""
    content = livepeer_operation(path)["requestBody"]["content"]
    (media,) = content.values()
    name = media["schema"]["$ref"].rsplit("/", 1)[-1]
    schema: dict[str, Any] = livepeer_spec()["components"]["schemas"][name]
    return schema


def check_livepeer(path: str, response: httpx.Response, method: str = "post") -> None:
    """The status is one livepeer declares for the route, and the body matches its schema for it."""
    responses = livepeer_operation(path, method)["responses"]
    assert str(response.status_code) in responses, (
        f"{method.upper()} {path}: {response.status_code} is not declared by livepeer ({sorted(responses)}): {response.text[:300]}"
    )
    declared = responses[str(response.status_code)]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    schema = declared["content"]["application/json"]["schema"]
    _validator(schema, livepeer_spec()["components"]).validate(response.json())


# -- PICO ------------------------------------------------------------------------

_PICO_STRICT_OBJECT = {"type": "object", "additionalProperties": False}

# Models/StableDiffusion.py: the attributes each route's ImageLayer carries.
_ATTRIBUTE_TYPES: dict[str, Any] = {
    "Model": {"type": "string"},
    "Phrase": {"type": "string"},
    "NegativePhrase": {"type": ["string", "null"]},  # the request's, None when absent
    "Strength": {"type": "number", "minimum": 0, "maximum": 1},
    "Seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1 + 4},  # seed + index
    "GuidanceScale": {"type": "number", "minimum": 0, "maximum": 10},
    "Quality": {"type": "integer", "minimum": 1, "maximum": 250},  # the step count
    "Precision": {"type": "string", "enum": ["torch.float16", "torch.float32", "torch.bfloat16"]},  # str(torch_dtype)
    "Index": {"type": "integer", "minimum": 0},
}

PICO_ATTRIBUTES: dict[str, list[str]] = {
    "StableDiffusion": ["Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"],
    "StableDiffusion2": ["Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"],
    "StableDiffusionXL": ["Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"],
    "StableDiffusionImageToImage": ["Model", "Phrase", "NegativePhrase", "Strength", "Seed", "GuidanceScale", "Quality", "Precision", "Index"],
    "StableDiffusionInpaint": ["Model", "Phrase", "NegativePhrase", "Seed", "GuidanceScale", "Quality", "Precision", "Index"],
    "StableDiffusionImageVariation": ["Seed", "GuidanceScale", "Quality", "Index"],
}


def pico_response_schema(name: str) -> dict[str, Any]:
    """API/PicoResponse.py (ElapsedSeconds, Images: list[ImageLayer]); ImageLayer.py (Name, Image, Attributes)."""
    attributes = PICO_ATTRIBUTES[name]
    layer = {
        **_PICO_STRICT_OBJECT,
        "required": ["Name", "Image", "Attributes"],
        "properties": {
            "Name": {"const": name},
            "Image": {"type": "string", "pattern": "^[A-Za-z0-9+/]+=*$"},  # Utility.GetImageBase64: raw base64 PNG
            "Attributes": {
                **_PICO_STRICT_OBJECT,
                "required": attributes,
                "properties": {key: _ATTRIBUTE_TYPES[key] for key in attributes},
            },
        },
    }
    return {
        **_PICO_STRICT_OBJECT,
        "required": ["ElapsedSeconds", "Images"],
        "properties": {"ElapsedSeconds": {"type": "number", "minimum": 0}, "Images": {"type": "array", "items": layer}},
    }


# API/PicoAPI.py: HTTPException(status_code, detail="GPU_BUSY" | "INTERNAL_SERVER_ERROR") -> FastAPI's {"detail": str}.
PICO_ERROR_SCHEMA = {**_PICO_STRICT_OBJECT, "required": ["detail"], "properties": {"detail": {"type": "string", "minLength": 1}}}
# FastAPI's RequestValidationError answer (PICO's request models are pydantic models in the body).
FASTAPI_422_SCHEMA = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {"loc": {"type": "array", "items": {"type": ["string", "integer"]}}, "msg": {"type": "string"}, "type": {"type": "string"}},
            },
        }
    },
}
# API/PicoAPI.py _GetHealth: exactly {"Status": "Idle" | "Busy"}.
PICO_HEALTH_SCHEMA = {**_PICO_STRICT_OBJECT, "required": ["Status"], "properties": {"Status": {"enum": ["Idle", "Busy"]}}}


def check_pico(response: httpx.Response, name: str = "") -> dict[str, Any]:
    """PICO's shape for the status: 200 PicoResponse, 422 FastAPI's list, else {"detail": str}."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        schema = pico_response_schema(name)
    elif response.status_code == 422:
        schema = FASTAPI_422_SCHEMA
    else:
        schema = PICO_ERROR_SCHEMA
    jsonschema.Draft202012Validator(schema).validate(body)
    return body
