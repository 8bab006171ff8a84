"""The CustomResourceDefinition, generated from the pydantic models in ``spec.py``.

``hack/gen_crd.py`` writes it to crds/inferencepipelines.yaml; a test fails when
that file differs from what this module builds, so the two never drift.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from . import spec as s

# Keys of pydantic's JSON schema that are not part of Kubernetes' structural schema.
_DROPPED_KEYS = {"title", "$defs"}


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema (refs inlined, optionals nullable) for ``model``."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs)


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _convert({**target, **extra}, defs)
    node = dict(node)
    any_of = node.get("anyOf")
    if any_of and {"type": "null"} in any_of:
        # Optional[X]: X itself, and null is accepted (it means "unset").
        rest = [option for option in any_of if option != {"type": "null"}]
        node.pop("anyOf")
        if node.get("default", "absent") is None:
            node.pop("default")
        inner = rest[0] if len(rest) == 1 else {"anyOf": rest}
        outer = {k: _convert(v, defs) for k, v in node.items() if k not in _DROPPED_KEYS}
        merged = {**_convert(inner, defs), **outer}
        merged["nullable"] = True
        if "enum" in merged and None not in merged["enum"]:
            # The API server checks enum on null values too: an explicit null must be listed to pass.
            merged["enum"] = [*merged["enum"], None]
        return merged
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key == "additionalProperties" and isinstance(value, bool):
            # Structural schemas prune unknown fields (false) or keep them with
            # x-kubernetes-preserve-unknown-fields (true); the boolean form is not allowed.
            continue
        else:
            out[key] = _convert(value, defs)
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            # JSON Schema's number form; OpenAPI v3.0 (Kubernetes) wants minimum + a boolean.
            out[limit], out[bound] = out[bound], True
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-int-or-string"):
        # As controller-gen writes quantities: the pattern outside the int/string choice. Sizes and
        # compute resources are never negative, so the API server refuses -1 and "-1Gi" at admission
        # (pattern applies to strings, minimum to numbers).
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out["pattern"] = s.NON_NEGATIVE_QUANTITY_PATTERN
        out["minimum"] = 0
    return out


def build_crd() -> dict[str, Any]:
    spec_schema = openapi_schema(s.InferencePipelineSpec)
    status_schema = openapi_schema(s.InferencePipelineStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.PLURAL}.{s.GROUP}"},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND,
                "listKind": f"{s.KIND}List",
                "plural": s.PLURAL,
                "singular": s.SINGULAR,
                "shortNames": list(s.SHORT_NAMES),
                "categories": ["all", "kubediffusers"],
            },
            "versions": [
                {
                    "name": s.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Task", "type": "string", "jsonPath": ".spec.task", "description": "The task served."},
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.id", "description": "Hugging Face repository id."},
                        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Runner pods that are ready."},
                        {
                            "name": "Phase",
                            "type": "string",
                            "jsonPath": ".status.phase",
                            "description": "Pending, Downloading, Loading, Ready, Degraded or Failed.",
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": ".status.reason",
                            "description": "Why the pipeline is in this phase, in one word (FailedCreate, ImagePullBackOff, FailedScheduling, ...).",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1, "description": "Cluster URL of the Service."},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "InferencePipeline serves one Hugging Face diffusers model for one task: a cached model, runner pods and a Service.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this representation of the object."},
                                "kind": {"type": "string", "description": "Kind of this object: InferencePipeline."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
