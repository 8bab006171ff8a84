"""One reconciliation of one pipeline: check, build, apply, observe, report.

Level-based: it reads everything it needs each time and does not care which event
woke it up, so a missed or repeated event changes nothing.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import autoscaling, names
from .apply import apply
from .builders import build_children, build_network_policy
from .checks import Problem, References, check, effective_replicas, secret_refs
from .kube import ApiError, Kube, object_path, path_of
from .layout import storage_status
from .pipeline import Pipeline
from .settings import OperatorSettings
from .spec import API_VERSION, PLURAL, SpecError
from .status import Observed, derive_status, status_changed


@dataclass(frozen=True)
class Result:
    status: dict[str, Any]
    previous_phase: str | None
    written: bool

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def gather_references(kube: Kube, pipeline: Pipeline) -> References:
    secrets: dict[str, frozenset[str] | None] = {}
    for ref in secret_refs(pipeline).values():
        if ref.name not in secrets:
            secret = await kube.get(object_path("v1", "Secret", pipeline.namespace, ref.name))
            # Only the key names are kept; the values are never read into the operator's state.
            secrets[ref.name] = None if secret is None else frozenset((secret.get("data") or {}) | (secret.get("stringData") or {}))
    claim = None
    if pipeline.spec.storage.existing_claim:
        claim = await kube.get(object_path("v1", "PersistentVolumeClaim", pipeline.namespace, pipeline.spec.storage.existing_claim))
    return References(secrets=secrets, claim=claim)


async def reconcile(
    body: Mapping[str, Any], kube: Kube, settings: OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], previous: Mapping[str, Any] | None
) -> Result | None:
    """Bring the children to the desired state and write the status.

    Returns None, doing nothing, when the pipeline is gone, being deleted, or was
    replaced by a new one of the same name (whose own loop serves it): ``body`` is
    the operator's last view of it, which may be stale.

    Raises ApiError for transient API trouble (the caller retries); a spec or an
    object the API server rejects ends in the status instead.
    """
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    # Read it afresh: children created for a pipeline that is already gone would be
    # collected by the garbage collector, re-created on the next event, and so on.
    fresh = await kube.get(object_path(API_VERSION, PLURAL, namespace, name))
    if fresh is None or fresh["metadata"].get("deletionTimestamp") or (meta.get("uid") and fresh["metadata"].get("uid") != meta.get("uid")):
        return None
    body, meta = fresh, fresh["metadata"]
    problems: list[Problem] = []
    pipeline: Pipeline | None = None
    try:
        pipeline = Pipeline.from_manifest(body)
    except SpecError as exc:
        problems.append(Problem("InvalidSpec", str(exc)))
    replicas = pod_hash = None
    observed = Observed(deployment=None, pods=[])
    scaling = autoscaling.ScalingPlan()
    extra_conditions: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    port = pipeline.spec.service.port if pipeline is not None else None
    if pipeline is not None:
        problems += check(pipeline, await gather_references(kube, pipeline))
    if pipeline is not None and not any(p.blocking for p in problems):
        scaling = await autoscaling.plan(kube, pipeline, settings)
        problems += scaling.problems
        replicas = effective_replicas(pipeline, problems)
        children = build_children(pipeline, settings, replicas=replicas, keda=scaling.build)
        if scaling.build and autoscaling.scales_to_zero(pipeline):
            port = settings.http_interceptor_port  # the Service is an ExternalName to the interceptor
        # Turned off: KEDA lets go of spec.replicas (see builders/autoscaling.py). Looked for only
        # while the status still names a ScaledObject, so other pipelines cost no extra request.
        if pipeline.spec.autoscaling is None and (previous or {}).get("autoscaling"):
            paused = await autoscaling.leftover(kube, pipeline, settings)
            children += [paused] if paused is not None else []
        if not pipeline.spec.network_policy.enabled:
            # One made before, when it was enabled, is neutralised rather than deleted (see builders/network_policy.py).
            policy = build_network_policy(pipeline, inert=True)
            if await kube.get(path_of(policy)) is not None:
                children.append(policy)
        try:
            for child in children:
                outcome = await apply(kube, child)
                if outcome != "unchanged":
                    logger.info(f"{child['kind']} {child['metadata']['name']} {outcome}")
        except ApiError as exc:
            if exc.transient:
                raise
            # 4xx other than conflicts: the object is wrong (or RBAC is); retrying cannot help.
            problems.append(Problem("Rejected", f"the API server rejected {child['kind']} {child['metadata']['name']}: {exc.message}"))
        else:
            deployment = next(c for c in children if c["kind"] == "Deployment")
            pod_hash = deployment["spec"]["template"]["metadata"]["annotations"][names.POD_HASH_ANNOTATION]
            observed = Observed(
                deployment=await kube.get(object_path("apps/v1", "Deployment", namespace, name)),
                pods=await kube.list(object_path("v1", "Pod", namespace), names.selector_string(name)),
            )
            condition, scaling_status = await autoscaling.observe(kube, pipeline, scaling)
            extra_conditions += [condition] if condition is not None else []
            extra["autoscaling"] = scaling_status
            extra["storage"] = storage_status(pipeline.spec, name, observed.pods, pod_hash)
    status = derive_status(
        name=name,
        namespace=namespace,
        generation=meta.get("generation"),
        problems=problems,
        observed=observed,
        previous=previous,
        now=now(),
        port=port,
        replicas=replicas,
        pod_hash=pod_hash,
        extra_conditions=extra_conditions,
        extra=extra,
    )
    written = False
    if status_changed(previous, status):
        try:
            await kube.patch_status(object_path(API_VERSION, PLURAL, namespace, name), status)
            written = True
        except ApiError as exc:
            if exc.status != 404:  # 404: deleted meanwhile, nothing to report on
                raise
    return Result(status=status, previous_phase=(previous or {}).get("phase"), written=written)
