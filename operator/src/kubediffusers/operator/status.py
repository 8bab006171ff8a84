"""Pipeline status from what the cluster shows: pure functions, no API calls.

The phase is derived level-based from the Deployment and its pods each time, so it
is right after an operator restart and never depends on having seen a transition.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import names
from .checks import Problem
from .layout import storage_layout
from .shared_jobs import shared_jobs
from .spec import InferencePipelineSpec, Phase

# Waiting reasons that do not fix themselves: the pod will not start until someone acts.
STUCK_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"})
RESOLVED = re.compile(r"^\s*resolved\s+([0-9a-fA-F]{7,64})\s*$")
MESSAGE_LIMIT = 1024  # keep status and events readable even when a log tail is the message

Json = dict[str, Any]


@dataclass(frozen=True)
class PodState:
    kind: str  # ready | fetching | fetch-failed | loading | crashing | stuck | pending
    reason: str
    message: str = ""
    resolved: str | None = None

    @property
    def failed(self) -> bool:
        return self.kind in ("fetch-failed", "crashing", "stuck")


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _terminated_message(term: Mapping[str, Any]) -> str:
    message = _short(term.get("message"))
    if message:
        return message
    return f"exit code {term.get('exitCode')}" + (f" ({term['reason']})" if term.get("reason") else "")


def parse_resolved(message: str | None) -> str | None:
    """The commit from the fetcher's success message ``resolved <sha>``."""
    match = RESOLVED.match(message or "")
    return match.group(1).lower() if match else None


def inspect_pod(pod: Mapping[str, Any]) -> PodState:
    status = pod.get("status") or {}
    inits = {c.get("name"): c for c in status.get("initContainerStatuses") or []}
    containers = {c.get("name"): c for c in status.get("containerStatuses") or []}
    fetch, runner = inits.get(names.FETCH_CONTAINER), containers.get(names.RUNNER_CONTAINER)
    resolved = None
    if fetch is not None:
        state, last = fetch.get("state") or {}, (fetch.get("lastState") or {}).get("terminated")
        term, waiting = state.get("terminated"), state.get("waiting")
        if term is not None and term.get("exitCode") == 0:
            resolved = parse_resolved(term.get("message"))
        elif term is not None:
            return PodState("fetch-failed", "FetchFailed", _terminated_message(term))
        elif waiting is not None and waiting.get("reason") in STUCK_WAITING:
            return PodState("stuck", waiting["reason"], _short(f"init container fetch: {waiting.get('message') or waiting['reason']}"))
        elif last is not None and last.get("exitCode") not in (0, None):
            # The kubelet retries a failed fetch with back-off; report the failure, not each retry.
            return PodState("fetch-failed", "FetchFailed", _terminated_message(last))
        elif state.get("running") is not None:
            return PodState("fetching", "Downloading", "the fetch init container is downloading the model")
        else:
            return _pending(status)
    if runner is not None:
        state, last = runner.get("state") or {}, (runner.get("lastState") or {}).get("terminated")
        waiting = state.get("waiting")
        if runner.get("ready"):
            return PodState("ready", "Ready", "", resolved)
        if waiting is not None and waiting.get("reason") in STUCK_WAITING:
            return PodState("stuck", waiting["reason"], _short(f"container runner: {waiting.get('message') or waiting['reason']}"), resolved)
        if (waiting is not None and waiting.get("reason") == "CrashLoopBackOff") or state.get("terminated") is not None:
            term = last or state.get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                return PodState(
                    "crashing", "OOMKilled", "the runner was killed for using more memory than its limit: raise spec.resources.limits.memory", resolved
                )
            return PodState("crashing", "RunnerCrashLoopBackOff", _short(f"runner keeps exiting: {_terminated_message(term)}"), resolved)
        message = "the runner is loading the model"
        if last is not None:
            message += f" (restarted {runner.get('restartCount', 0)} times; last exit: {_terminated_message(last)})"
        return PodState("loading", "Loading", message, resolved)
    if fetch is not None and resolved is not None:
        return PodState("loading", "Loading", "the model is cached; the runner is starting", resolved)
    return _pending(status)


def _pending(status: Mapping[str, Any]) -> PodState:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return PodState("pending", cond.get("reason") or "Unschedulable", _short(cond.get("message")))
    return PodState("pending", "PodPending", "waiting for the pod to start")


# Warning events on pods that say why a pod that exists does not start.
POD_WARNINGS = frozenset({"FailedScheduling", "FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"})


@dataclass(frozen=True)
class Observed:
    """What the cluster shows for one pipeline."""

    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]
    events: Sequence[Mapping[str, Any]] = ()  # Warning events in the namespace (any object; filtered here)


def _latest_warnings(events: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> dict[str, PodState]:
    """Per pod name, its newest warning event of the kinds in POD_WARNINGS."""
    names_ = {(p.get("metadata") or {}).get("name") for p in pods}
    newest: dict[str, tuple[str, PodState]] = {}
    for event in events:
        target = event.get("involvedObject") or event.get("regarding") or {}
        reason = event.get("reason") or ""
        if target.get("kind") != "Pod" or target.get("name") not in names_ or reason not in POD_WARNINGS or event.get("type") != "Warning":
            continue
        when = str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")
        if target["name"] not in newest or when >= newest[target["name"]][0]:
            newest[target["name"]] = (when, PodState("pending", reason, _short(event.get("message") or event.get("note"))))
    return {name: state for name, (_, state) in newest.items()}


def _deployment_trouble(deployment: Mapping[str, Any] | None) -> PodState | None:
    """ReplicaFailure (pods cannot be created: quota, admission) or a stalled rollout, from the Deployment's conditions."""
    for cond in ((deployment or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return PodState("stuck", cond.get("reason") or "FailedCreate", _short(f"pods cannot be created: {cond.get('message')}"))
        if cond.get("type") == "Progressing" and cond.get("status") == "False" and cond.get("reason") == "ProgressDeadlineExceeded":
            return PodState("stuck", "ProgressDeadlineExceeded", _short(cond.get("message") or "the rollout made no progress"))
    return None


def _condition(type_: str, ok: bool | None, reason: str, message: str) -> Json:
    return {"type": type_, "status": "Unknown" if ok is None else str(ok), "reason": reason, "message": message}


def derive_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    problems: Sequence[Problem],
    observed: Observed,
    previous: Mapping[str, Any] | None,
    now: str,
    port: int | None,
    replicas: int | None,
    pod_hash: str | None,
    storage_note: str | None = None,
    extra_conditions: Sequence[Json] = (),
    extra: Mapping[str, Any] | None = None,
) -> Json:
    """The whole new status. ``replicas`` is what the operator asked the Deployment for.

    ``extra_conditions`` and ``extra`` (more status fields) come from other parts, e.g. autoscaling and the storage layout.
    """
    previous = previous or {}
    blocking = [p for p in problems if p.blocking]
    warnings = [p for p in problems if not p.blocking]
    deployment = observed.deployment
    live = [p for p in observed.pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    current = [p for p in live if pod_hash is None or ((p.get("metadata") or {}).get("annotations") or {}).get(names.POD_HASH_ANNOTATION) == pod_hash]
    warnings_by_pod = _latest_warnings(observed.events, current)
    states = []
    for pod in current:
        state = inspect_pod(pod)
        warning = warnings_by_pod.get(str((pod.get("metadata") or {}).get("name")))
        if state.kind == "pending" and warning is not None and state.reason in ("PodPending", "Unschedulable"):
            state = warning  # the scheduler's or kubelet's own words: FailedScheduling, FailedMount, ...
        states.append(state)
    dep_status = (deployment or {}).get("status") or {}
    ready_current = sum(1 for s in states if s.kind == "ready")
    # The Deployment's count lags its pods' (and vice versa): take whichever saw more.
    ready_pods = sum(1 for p in live if inspect_pod(p).kind == "ready")
    ready_total = max(int(dep_status.get("readyReplicas") or 0), ready_pods)
    desired = replicas if replicas is not None else int(((deployment or {}).get("spec") or {}).get("replicas") or 0)

    phase, reason, message = _phase(blocking, warnings, deployment, states, desired, ready_current, ready_total)
    trouble = _deployment_trouble(deployment)
    if trouble is not None and phase in (Phase.PENDING, Phase.DEGRADED) and ready_current < desired and not any(s.failed for s in states):
        phase = Phase.DEGRADED if ready_total else Phase.FAILED
        reason, message = trouble.reason, trouble.message

    resolved = next((s.resolved for s in states if s.resolved), None) or ((previous.get("model") or {}).get("resolvedRevision"))
    if blocking:
        valid = _condition("Valid", False, blocking[0].reason, "; ".join(p.message for p in blocking))
    elif warnings:
        valid = _condition("Valid", False, warnings[0].reason, "; ".join(p.message for p in warnings))
    else:
        valid = _condition("Valid", True, "SpecValid", "the spec and everything it refers to are valid")
    conditions = [
        valid,
        _model_condition(states, resolved),
        _available_condition(ready_total, desired, deployment, reason, message),
        _storage_condition(problems, storage_note),
    ]
    conditions += [dict(c) for c in extra_conditions]

    status: Json = {
        "phase": phase.value,
        "reason": reason,
        "message": message,
        "conditions": _keep_transition_times(conditions, previous.get("conditions") or [], now, generation),
        "observedGeneration": generation,
        "replicas": int(dep_status.get("replicas") or 0),
        "readyReplicas": ready_total,
        "selector": names.selector_string(name),
        "url": names.service_url(name, namespace, port) if port is not None else previous.get("url"),
        "model": {"resolvedRevision": resolved},
        **(extra or {}),
    }
    return status


def _phase(blocking, warnings, deployment, states, desired, ready_current, ready_total) -> tuple[Phase, str, str]:
    if blocking:
        return Phase.FAILED, blocking[0].reason, "; ".join(p.message for p in blocking)
    if deployment is None:
        return Phase.PENDING, "Creating", "creating the claim, Deployment and Service"
    if desired == 0:
        return Phase.PENDING, "ScaledToZero", "spec.replicas is 0"
    if ready_current >= desired:
        if warnings:
            return Phase.DEGRADED, warnings[0].reason, warnings[0].message
        return Phase.READY, "Ready", f"{ready_current}/{desired} replicas ready"
    failures = [s for s in states if s.failed]
    if failures:
        first = failures[0]
        return (Phase.DEGRADED if ready_total else Phase.FAILED), first.reason, first.message
    if ready_current:
        return Phase.DEGRADED, "ReplicasNotReady", f"{ready_current}/{desired} replicas ready"
    serving = f"; {ready_total} replica(s) of the previous spec still serving" if ready_total else ""
    for kind, phase in (("fetching", Phase.DOWNLOADING), ("loading", Phase.LOADING)):
        match = next((s for s in states if s.kind == kind), None)
        if match is not None:
            return phase, match.reason, match.message + serving
    pending = next((s for s in states if s.kind == "pending"), None)
    if pending is not None:
        return Phase.PENDING, pending.reason, pending.message + serving
    return Phase.PENDING, "WaitingForPods", "waiting for the Deployment to create pods" + serving


def _model_condition(states: Sequence[PodState], resolved: str | None) -> Json:
    if any(s.resolved or s.kind in ("ready", "loading", "crashing") for s in states):
        return _condition("ModelCached", True, "Fetched", f"resolved {resolved}" if resolved else "the model is in the cache")
    failed = next((s for s in states if s.kind == "fetch-failed"), None)
    if failed is not None:
        return _condition("ModelCached", False, "FetchFailed", failed.message)
    if any(s.kind == "fetching" for s in states):
        return _condition("ModelCached", False, "Downloading", "the fetch init container is downloading the model")
    return _condition("ModelCached", None, "NotFetched", "no pod has fetched the model yet")


def _available_condition(ready: int, desired: int, deployment: Mapping[str, Any] | None, reason: str, message: str) -> Json:
    if ready > 0:
        return _condition("Available", True, "ReplicasReady", f"{ready}/{desired} replicas ready")
    if deployment is not None and desired == 0:
        return _condition("Available", False, "ScaledToZero", "spec.replicas is 0")
    # Not serving: say why, with the same words as the phase (FetchFailed, Unschedulable, ...).
    return _condition("Available", False, reason, message or "no runner pod is ready")


def _storage_condition(problems: Sequence[Problem], resizing: str | None) -> Json:
    rejected = [p for p in problems if p.reason in ("StorageChangeRejected", "StorageResizeRejected")]
    if rejected:
        return _condition("StorageReady", False, rejected[0].reason, "; ".join(p.message for p in rejected))
    if resizing:
        return _condition("StorageReady", False, "Resizing", resizing)
    return _condition("StorageReady", True, "AsSpecified", "the model cache claim is as the spec asks")


def _keep_transition_times(conditions: list[Json], previous: Sequence[Mapping[str, Any]], now: str, generation: int | None) -> list[Json]:
    before = {c.get("type"): c for c in previous}
    for cond in conditions:
        old = before.get(cond["type"])
        same = old is not None and old.get("status") == cond["status"]
        cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old is not None else now
        cond["observedGeneration"] = generation
    return conditions


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return any((old or {}).get(key) != value for key, value in new.items())


# ---- status.storage (the layout itself is layout.py's)


def cached(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's model is in its cache: its fetch init container finished."""
    state = inspect_pod(pod)
    return state.resolved is not None or state.kind in ("ready", "loading", "crashing")


def storage_status(
    spec: InferencePipelineSpec, pipeline: str, pods: Sequence[Mapping[str, Any]], pod_hash: str | None, claim_modes: frozenset[str] | None = None
) -> dict[str, Any]:
    """``status.storage``: the layout in use, how many replicas of the current spec have their model cached, and
    whether async jobs are shared (decided as the Deployment's env is: ``claim_modes`` of an existingClaim as found)."""
    layout = storage_layout(spec)
    current = [
        p
        for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (pod_hash is None or ((p.get("metadata") or {}).get("annotations") or {}).get(names.POD_HASH_ANNOTATION) == pod_hash)
    ]
    status: dict[str, Any] = {"layout": layout, "cachedReplicas": sum(1 for p in current if cached(p)), "sharedJobs": shared_jobs(spec, claim_modes)}
    if layout == "Shared":
        status["claim"] = spec.storage.existing_claim or names.claim_name(pipeline)
    return status
