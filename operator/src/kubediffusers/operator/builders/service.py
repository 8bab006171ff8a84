"""The Service ``<name>`` in front of the runner pods."""

from __future__ import annotations

from typing import Any

from .. import names
from ..pipeline import Pipeline
from .meta import object_meta, with_hash


def build_service(pipeline: Pipeline) -> dict[str, Any]:
    svc = pipeline.spec.service
    spec: dict[str, Any] = {
        "type": svc.type,
        "selector": names.selector_labels(pipeline.name),
        "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
        # Always set (server-side apply then also resets it when the spec goes back to None).
        "sessionAffinity": svc.session_affinity,
    }
    if svc.session_affinity == "ClientIP" and svc.session_affinity_timeout_seconds is not None:
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": svc.session_affinity_timeout_seconds}}
    return with_hash({"apiVersion": "v1", "kind": "Service", "metadata": object_meta(pipeline, pipeline.name), "spec": spec})
