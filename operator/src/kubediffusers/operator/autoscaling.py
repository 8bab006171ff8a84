"""spec.autoscaling in the cluster: is KEDA there, what to build, what KEDA says.

All or nothing: the KEDA objects (builders/autoscaling.py) are built only when every
API they need is served and the Prometheus address is known. Otherwise the pipeline
runs at spec.replicas with its usual Service, the Autoscaling condition says what is
missing, and no KEDA object is half made (a ScaledObject without its HTTPScaledObject
would scale to zero with nothing to wake the pipeline up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .builders.autoscaling import (
    HTTP_SCALED_OBJECTS,
    KEDA_API_VERSION,
    KEDA_HTTP_API_VERSION,
    PAUSED_ANNOTATION,
    SCALED_OBJECTS,
    build_scaled_object,
    prometheus_address,
    queue_query,
    scales_to_zero,
)
from .checks import Problem
from .kube import ApiError, Kube, object_path
from .pipeline import Pipeline
from .settings import OperatorSettings

CONDITION = "Autoscaling"
Json = dict[str, Any]


@dataclass(frozen=True)
class ScalingPlan:
    """What the reconciliation does about spec.autoscaling."""

    build: bool = False  # build the KEDA objects (and, for minReplicas 0, route through the interceptor)
    problems: list[Problem] = field(default_factory=list)
    condition: Json | None = None  # the Autoscaling condition when nothing is built


async def api_serves(kube: Kube, api_version: str, plural: str, namespace: str) -> bool:
    """Whether the API server serves the resource (its CRD is installed): 404 on its collection says no."""
    try:
        await kube.request("GET", object_path(api_version, plural, namespace), params={"limit": "1"})
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _missing(reason: str, message: str) -> ScalingPlan:
    return ScalingPlan(False, [Problem(reason, message, blocking=False)], {"type": CONDITION, "status": "False", "reason": reason, "message": message})


async def plan(kube: Kube, pipeline: Pipeline, settings: OperatorSettings) -> ScalingPlan:
    auto = pipeline.spec.autoscaling
    if auto is None:
        return ScalingPlan()
    fallback = f"running spec.replicas={pipeline.spec.replicas} without autoscaling (see docs/scaling.md)"
    if not await api_serves(kube, KEDA_API_VERSION, SCALED_OBJECTS, pipeline.namespace):
        return _missing("KEDANotInstalled", f"spec.autoscaling: KEDA is not installed (no {SCALED_OBJECTS}.{KEDA_API_VERSION} in the API); {fallback}")
    if scales_to_zero(pipeline) and not await api_serves(kube, KEDA_HTTP_API_VERSION, HTTP_SCALED_OBJECTS, pipeline.namespace):
        return _missing(
            "HTTPAddOnNotInstalled",
            f"spec.autoscaling.minReplicas 0 needs the KEDA HTTP add-on to hold requests while scaled to zero "
            f"(no {HTTP_SCALED_OBJECTS}.{KEDA_HTTP_API_VERSION} in the API); {fallback}",
        )
    if prometheus_address(pipeline, settings) is None:
        return _missing(
            "PrometheusAddressMissing",
            f"spec.autoscaling: no Prometheus server to query: set spec.autoscaling.prometheusAddress or the chart's autoscaling.prometheusAddress; {fallback}",
        )
    return ScalingPlan(build=True)


async def leftover(kube: Kube, pipeline: Pipeline, settings: OperatorSettings) -> Json | None:
    """With autoscaling off: a ScaledObject made before, paused (never deleted), or None."""
    current = await kube.get(object_path(KEDA_API_VERSION, SCALED_OBJECTS, pipeline.namespace, pipeline.name))
    if current is None:
        return None
    return build_scaled_object(pipeline, settings, paused=True)


async def observe(kube: Kube, pipeline: Pipeline, scaling: ScalingPlan) -> tuple[Json | None, Json | None]:
    """The Autoscaling condition and status.autoscaling, from what KEDA reports on the ScaledObject."""
    if pipeline.spec.autoscaling is None:
        return None, None
    if not scaling.build:
        return scaling.condition, None
    status = {
        "scaledObject": pipeline.name,
        "httpScaledObject": pipeline.name if scales_to_zero(pipeline) else None,
        "query": queue_query(pipeline),
    }
    scaled = await kube.get(object_path(KEDA_API_VERSION, SCALED_OBJECTS, pipeline.namespace, pipeline.name))
    return keda_condition(scaled), status


def keda_condition(scaled: Mapping[str, Any] | None) -> Json:
    """KEDA's Ready condition on the ScaledObject, as the pipeline's Autoscaling condition."""
    if scaled is None:
        return {"type": CONDITION, "status": "Unknown", "reason": "Creating", "message": "creating the ScaledObject"}
    if ((scaled.get("metadata") or {}).get("annotations") or {}).get(PAUSED_ANNOTATION) == "true":
        return {"type": CONDITION, "status": "False", "reason": "Paused", "message": "the ScaledObject is paused"}
    ready = next((c for c in (scaled.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") not in ("True", "False"):
        return {"type": CONDITION, "status": "Unknown", "reason": "WaitingForKEDA", "message": "KEDA has not reported on the ScaledObject yet"}
    if ready["status"] == "True":
        return {"type": CONDITION, "status": "True", "reason": "ScaledObjectReady", "message": ready.get("message") or "KEDA scales the pipeline"}
    # e.g. the Prometheus server cannot be reached or the query fails: KEDA's own words.
    return {"type": CONDITION, "status": "False", "reason": ready.get("reason") or "ScaledObjectNotReady", "message": ready.get("message") or ""}
