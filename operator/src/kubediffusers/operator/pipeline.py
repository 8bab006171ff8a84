"""One InferencePipeline as the builders see it: identity plus parsed spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .spec import API_VERSION, KIND, InferencePipelineSpec, SpecError, parse_spec


@dataclass(frozen=True)
class Pipeline:
    name: str
    namespace: str
    spec: InferencePipelineSpec
    uid: str | None = None  # None when rendered offline: then children carry no owner reference
    generation: int | None = None

    @classmethod
    def from_manifest(cls, obj: Mapping[str, Any], default_namespace: str = "default") -> Pipeline:
        """Parse a whole manifest (apiVersion/kind/metadata/spec), raising SpecError with one line."""
        if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
            raise SpecError(f"expected apiVersion {API_VERSION} and kind {KIND}, got {obj.get('apiVersion')!r} {obj.get('kind')!r}")
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise SpecError("metadata.name is required")
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or default_namespace,
            spec=parse_spec(obj.get("spec")),
            uid=meta.get("uid"),
            generation=meta.get("generation"),
        )

    def owner_reference(self) -> dict[str, Any] | None:
        if not self.uid:
            return None
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
