"""KEDA objects for ``spec.autoscaling``: a ScaledObject, and for scale to zero an HTTPScaledObject.

The ScaledObject targets the InferencePipeline itself through its scale subresource
(``scaleTargetRef`` names the CR, not the Deployment): KEDA's HPA writes
``spec.replicas`` of the pipeline, the operator carries it to the Deployment, and
``kubectl scale``, the status and the operator stay one source of truth.

It scales on the runner's Prometheus metrics with a query written here from the
spec (``queue_query``). With ``minReplicas: 0`` the KEDA HTTP add-on holds requests
that arrive while no replica is ready: the pipeline's Service becomes an
ExternalName to the add-on's interceptor (the name users call is unchanged), the
interceptor forwards to ``<name>-backend`` (the runner pods), and the ScaledObject
gains the add-on's ``external-push`` trigger, which wakes the pipeline from zero on
the first pending request. The HTTPScaledObject carries the add-on's
skip-scaledobject-creation annotation: two ScaledObjects may not target one object,
so the operator writes the one that combines both signals.

Turned off again, the ScaledObject is not deleted (the operator never deletes, see
permissions.py) but paused with KEDA's ``autoscaling.keda.sh/paused`` annotation:
KEDA stops its scale loop and removes its HPA, and spec.replicas is the user's again.
"""

from __future__ import annotations

import math
from typing import Any

from .. import names
from ..pipeline import Pipeline
from ..settings import OperatorSettings
from ..spec import API_VERSION, KIND, AutoscalingSpec, SpecError
from .meta import object_meta, with_hash

KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_HTTP_API_VERSION = "http.keda.sh/v1alpha1"
SCALED_OBJECTS = "scaledobjects"
HTTP_SCALED_OBJECTS = "httpscaledobjects"
PAUSED_ANNOTATION = "autoscaling.keda.sh/paused"
# The add-on then leaves the ScaledObject to us (http-add-on operator/controllers/http/app.go).
SKIP_SCALED_OBJECT_ANNOTATION = "httpscaledobject.keda.sh/skip-scaledobject-creation"
# The interceptor's default response-header timeout; requests longer than this would be cut.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 300


def _number(value: float) -> str:
    return f"{value:g}"  # trigger metadata values are strings in KEDA's schema


def pod_selector(pipeline: Pipeline) -> str:
    """PromQL label matchers for the pipeline's runner pods.

    ``namespace`` and ``pod`` are the labels both common scrape set-ups attach (a
    Prometheus Operator PodMonitor and the ``kubernetes-pods`` annotation job).
    Deployment pods are named ``<deployment>-<template hash>-<suffix>``; neither part
    contains a dash, so ``sd`` never matches the pods of a pipeline named ``sd-xl``.
    """
    return f'namespace="{pipeline.namespace}",pod=~"{pipeline.name}-[a-z0-9]+-[a-z0-9]+"'


def queue_query(pipeline: Pipeline) -> str:
    """Requests waiting in the pipeline's queues, summed over its pods (0 with no pods)."""
    return f"sum(kubediffusers_queue_depth{{{pod_selector(pipeline)}}}) or vector(0)"


def in_flight_query(pipeline: Pipeline) -> str:
    """Requests queued plus running, summed over the pipeline's pods."""
    sel = pod_selector(pipeline)
    return f"(sum(kubediffusers_queue_depth{{{sel}}}) or vector(0)) + (sum(kubediffusers_in_flight{{{sel}}}) or vector(0))"


def prometheus_address(pipeline: Pipeline, settings: OperatorSettings) -> str | None:
    auto = pipeline.spec.autoscaling
    return (auto.prometheus_address if auto is not None else None) or settings.prometheus_address


def backend_service_name(pipeline: str) -> str:
    return f"{pipeline}-backend"


def scales_to_zero(pipeline: Pipeline) -> bool:
    auto = pipeline.spec.autoscaling
    return auto is not None and auto.min_replicas == 0


def service_hosts(pipeline: Pipeline) -> list[str]:
    """Every Host a client in the cluster may send for the Service, then the spec's extra ones."""
    base = [pipeline.name, f"{pipeline.name}.{pipeline.namespace}", f"{pipeline.name}.{pipeline.namespace}.svc"]
    base.append(f"{pipeline.name}.{pipeline.namespace}.svc.cluster.local")
    auto = pipeline.spec.autoscaling
    extra = [h for h in (auto.hosts if auto is not None else []) if h not in base]
    return base + extra


def _triggers(pipeline: Pipeline, auto: AutoscalingSpec, server: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": "queue-depth",
            "metricType": "AverageValue",
            "metadata": {"serverAddress": server, "query": queue_query(pipeline), "threshold": _number(auto.target_queue_depth)},
        }
    ]
    if auto.target_in_flight is not None:
        triggers.append(
            {
                "type": "prometheus",
                "name": "in-flight",
                "metricType": "AverageValue",
                "metadata": {"serverAddress": server, "query": in_flight_query(pipeline), "threshold": _number(auto.target_in_flight)},
            }
        )
    if auto.min_replicas == 0:
        # Pending requests at the interceptor: the only signal there is while no pod exists.
        triggers.append(
            {
                "type": "external-push",
                "name": "http-pending",
                "metadata": {"scalerAddress": settings.http_external_scaler_address, "httpScaledObject": pipeline.name},
            }
        )
    return triggers


def build_scaled_object(pipeline: Pipeline, settings: OperatorSettings, *, paused: bool = False) -> dict[str, Any]:
    """The ScaledObject ``<name>``; ``paused``: the inert form kept after autoscaling is turned off."""
    meta = object_meta(pipeline, pipeline.name)
    target = {"apiVersion": API_VERSION, "kind": KIND, "name": pipeline.name}
    auto = pipeline.spec.autoscaling
    if paused or auto is None:
        meta["annotations"] = {PAUSED_ANNOTATION: "true"}
        # The schema wants triggers; this one is never evaluated while paused.
        trigger = {"type": "prometheus", "name": "queue-depth", "metadata": {"serverAddress": "http://paused.invalid", "query": "vector(0)", "threshold": "1"}}
        spec: dict[str, Any] = {"scaleTargetRef": target, "triggers": [trigger]}
        return with_hash({"apiVersion": KEDA_API_VERSION, "kind": "ScaledObject", "metadata": meta, "spec": spec})
    server = prometheus_address(pipeline, settings)
    if server is None:
        raise SpecError("spec.autoscaling: no Prometheus address: set spec.autoscaling.prometheusAddress or KUBEDIFFUSERS_OPERATOR_PROMETHEUS_ADDRESS")
    spec = {
        "scaleTargetRef": target,
        "minReplicaCount": auto.min_replicas,
        "maxReplicaCount": auto.max_replicas,
        "pollingInterval": auto.polling_interval_seconds,
        "cooldownPeriod": auto.cooldown_seconds,
        "advanced": {
            # Deleting the ScaledObject must not reset spec.replicas behind the user's back.
            "restoreToOriginalReplicaCount": False,
            "horizontalPodAutoscalerConfig": {
                "name": f"keda-hpa-{pipeline.name}",
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": auto.scale_down_stabilization_seconds}},
            },
        },
        "triggers": _triggers(pipeline, auto, server, settings),
    }
    return with_hash({"apiVersion": KEDA_API_VERSION, "kind": "ScaledObject", "metadata": meta, "spec": spec})


def build_http_scaled_object(pipeline: Pipeline) -> dict[str, Any]:
    """The HTTPScaledObject ``<name>``: the interceptor's route to ``<name>-backend`` (minReplicas 0)."""
    auto = pipeline.spec.autoscaling
    if auto is None:
        raise SpecError("spec.autoscaling is needed for an HTTPScaledObject")
    meta = object_meta(pipeline, pipeline.name)
    meta["annotations"] = {SKIP_SCALED_OBJECT_ANNOTATION: "true"}
    request_timeout = pipeline.spec.runner.request_timeout_seconds or DEFAULT_REQUEST_TIMEOUT_SECONDS
    spec = {
        "hosts": service_hosts(pipeline),
        "scaleTargetRef": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": pipeline.name,
            "service": backend_service_name(pipeline.name),
            "port": names.RUNNER_PORT,
        },
        "replicas": {"min": auto.min_replicas, "max": auto.max_replicas},
        # Requests open at the interceptor per replica (queued plus running): the external-push
        # trigger's target, so a burst that arrives at zero scales out at once, not one by one.
        "scalingMetric": {"concurrency": {"targetValue": interceptor_concurrency_target(auto)}},
        "scaledownPeriod": auto.cooldown_seconds,
        "timeouts": {
            # Held while a replica starts: download (per-pod storage), load, warm-up.
            "conditionWait": f"{auto.cold_start_timeout_seconds}s",
            # A generation may take up to the runner's own timeout; the interceptor must not cut it first.
            "responseHeader": f"{int(request_timeout) + 5}s",
        },
    }
    return with_hash({"apiVersion": KEDA_HTTP_API_VERSION, "kind": "HTTPScaledObject", "metadata": meta, "spec": spec})


def interceptor_concurrency_target(auto: AutoscalingSpec) -> int:
    """The same load per replica as the Prometheus triggers, counted at the interceptor."""
    return max(1, math.ceil(auto.target_in_flight if auto.target_in_flight is not None else auto.target_queue_depth + 1))


def build_backend_service(pipeline: Pipeline) -> dict[str, Any]:
    """``<name>-backend``: the runner pods, where the interceptor forwards (minReplicas 0)."""
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(pipeline, backend_service_name(pipeline.name)),
            "spec": {
                "type": "ClusterIP",
                "selector": names.selector_labels(pipeline.name),
                "ports": [{"name": "http", "port": names.RUNNER_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        }
    )


def build_interceptor_service(pipeline: Pipeline, settings: OperatorSettings) -> dict[str, Any]:
    """The user-facing Service ``<name>`` as an ExternalName to the interceptor (minReplicas 0).

    Same name, so clients keep their URL host; an ExternalName is a DNS alias and maps
    no ports, so the port is the interceptor's (status.url says which).
    """
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(pipeline, pipeline.name),
            "spec": {
                "type": "ExternalName",
                "externalName": settings.http_interceptor_service,
                "ports": [{"name": "http", "port": settings.http_interceptor_port, "protocol": "TCP"}],
            },
        }
    )
