"""The model cache claim ``<name>-models``."""

from __future__ import annotations

from typing import Any

from .. import names
from ..layout import storage_layout
from ..pipeline import Pipeline
from .meta import object_meta, with_hash


def build_claim(pipeline: Pipeline) -> dict[str, Any] | None:
    """The PVC, or None when the pipeline uses an existing claim or a claim per pod (layout PerPod)."""
    storage = pipeline.spec.storage
    if storage.existing_claim or storage_layout(pipeline.spec) == "PerPod":
        return None
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class_name is not None:
        spec["storageClassName"] = storage.storage_class_name
    # Retain: no owner reference, so the garbage collector leaves the claim (and the cached model) behind.
    meta = object_meta(pipeline, names.claim_name(pipeline.name), owned=storage.delete_policy == "Delete")
    return with_hash({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec})
