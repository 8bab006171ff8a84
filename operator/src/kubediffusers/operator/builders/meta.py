"""Metadata shared by every child: name, labels, owner reference, spec hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .. import names
from ..pipeline import Pipeline


def spec_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able value (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def object_meta(pipeline: Pipeline, name: str, *, owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": pipeline.namespace, "labels": names.labels(pipeline.name)}
    owner = pipeline.owner_reference() if owned else None
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp the object with a hash of its desired state (what apply compares first)."""
    obj["metadata"].setdefault("annotations", {})[names.SPEC_HASH_ANNOTATION] = spec_hash(obj)
    return obj
