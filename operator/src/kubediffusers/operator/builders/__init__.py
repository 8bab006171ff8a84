"""Pure builders: a pipeline (and the operator settings) in, plain Kubernetes dicts out.

Nothing here talks to the API; ``apply.py`` is the one place that writes them.
"""

from __future__ import annotations

from typing import Any

from ..pipeline import Pipeline
from ..settings import OperatorSettings
from .claim import build_claim
from .deployment import build_deployment
from .env import build_fetch_env, build_runner_env
from .meta import object_meta, spec_hash
from .network_policy import build_network_policy
from .service import build_service

__all__ = [
    "build_children",
    "build_claim",
    "build_deployment",
    "build_fetch_env",
    "build_network_policy",
    "build_runner_env",
    "build_service",
    "object_meta",
    "spec_hash",
]


def build_children(
    pipeline: Pipeline, settings: OperatorSettings, replicas: int | None = None, claim_modes: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """Every object the pipeline becomes, in the order they should be created (``claim_modes``: of an existing claim)."""
    children: list[dict[str, Any]] = []
    claim = build_claim(pipeline)
    if claim is not None:
        children.append(claim)
    children.append(build_deployment(pipeline, settings, replicas=replicas, claim_modes=claim_modes))
    children.append(build_service(pipeline))
    if pipeline.spec.network_policy.enabled:
        children.append(build_network_policy(pipeline))
    return children
