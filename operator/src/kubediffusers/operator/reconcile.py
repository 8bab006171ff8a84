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
from .pipeline import Pipeline
from .settings import OperatorSettings
from .spec import API_VERSION, PLURAL, SpecError
from .status import Observed, derive_status, inspect_pod, status_changed, storage_status
from .storage import claim_change_problems, rejected_resize, resize_requested, resizing


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


async def gather_references(kube: Kube, pipeline: Pipeline, settings: OperatorSettings) -> References:
    secrets: dict[str, frozenset[str] | None] = {}
    for ref in secret_refs(pipeline).values() if settings.check_secret_keys else ():
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
    replicas = pod_hash = storage_note = None
    observed = Observed(deployment=None, pods=[])
    scaling = autoscaling.ScalingPlan()
    extra_conditions: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    port = pipeline.spec.service.port if pipeline is not None else None
    if pipeline is not None:
        refs = await gather_references(kube, pipeline, settings)
        problems += check(pipeline, refs)
    if pipeline is not None and not any(p.blocking for p in problems):
        scaling = await autoscaling.plan(kube, pipeline, settings)
        problems += scaling.problems
        replicas = effective_replicas(pipeline, problems)
        claim_modes = frozenset(((refs.claim or {}).get("spec") or {}).get("accessModes") or []) if refs.claim is not None else None
        children = build_children(pipeline, settings, replicas=replicas, claim_modes=claim_modes, keda=scaling.build)
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
        claim = next((c for c in children if c["kind"] == "PersistentVolumeClaim"), None)
        live_claim = await kube.get(path_of(claim)) if claim is not None else None
        if claim is not None and live_claim is not None and (storage_problems := claim_change_problems(claim, live_claim)):
            problems += storage_problems
            children.remove(claim)  # the claim stays as it is; everything else is still applied
        deployment_applied = False
        for child in children:
            try:
                outcome = await apply(kube, child, live_claim) if child is claim else await apply(kube, child)
            except ApiError as exc:
                if exc.transient:
                    raise
                # 4xx other than conflicts: the object is wrong (or RBAC is); retrying cannot help.
                if child is claim and live_claim is not None and resize_requested(live_claim, child):
                    problems.append(rejected_resize(live_claim, child, exc.message))
                else:
                    problems.append(Problem("Rejected", f"the API server rejected {child['kind']} {child['metadata']['name']}: {exc.message}"))
                continue
            if outcome != "unchanged":
                logger.info(f"{child['kind']} {child['metadata']['name']} {outcome}")
            deployment_applied = deployment_applied or child["kind"] == "Deployment"
        if claim is not None and not any(p.reason.startswith("Storage") for p in problems):
            storage_note = resizing(live_claim, claim)
        if deployment_applied:
            deployment = next(c for c in children if c["kind"] == "Deployment")
            pod_hash = deployment["spec"]["template"]["metadata"]["annotations"][names.POD_HASH_ANNOTATION]
            live_deployment = await kube.get(object_path("apps/v1", "Deployment", namespace, name))
            pods = await kube.list(object_path("v1", "Pod", namespace), names.selector_string(name))
            events: list[dict[str, Any]] = []
            if any(inspect_pod(p).kind == "pending" for p in pods):
                # Why pods that exist do not start (FailedScheduling, FailedMount, ...); filtered by pod in status.py too.
                events = await kube.list(object_path("v1", "Event", namespace), field_selector="type=Warning,involvedObject.kind=Pod")
            observed = Observed(deployment=live_deployment, pods=pods, events=events)
            condition, scaling_status = await autoscaling.observe(kube, pipeline, scaling)
            extra_conditions += [condition] if condition is not None else []
            extra["autoscaling"] = scaling_status
            extra["storage"] = storage_status(pipeline.spec, name, pods, pod_hash, claim_modes)
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
        storage_note=storage_note,
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
