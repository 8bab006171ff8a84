"""The Service ``<name>`` in front of the runner pods."""

from __future__ import annotations

from typing import Any

from .. import names
from ..pipeline import Pipeline
from .meta import object_meta, with_hash


def build_service(pipeline: Pipeline) -> dict[str, Any]:
    svc = pipeline.spec.service
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(pipeline, pipeline.name),
            "spec": {
                "type": svc.type,
                "selector": names.selector_labels(pipeline.name),
                "ports": [{"name": "http", "port": svc.port, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    )
