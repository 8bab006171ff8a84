"""Phase, conditions and checks: pure functions over what the cluster shows."""

from __future__ import annotations

from typing import Any

import pytest

from kubediffusers.operator import names
from kubediffusers.operator.checks import Problem, References, check, effective_replicas
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.status import Observed, derive_status, inspect_pod, parse_resolved
from tests.operator.helpers import manifest

SHA = "0123456789abcdef0123456789abcdef01234567"
HASH = "podhash"


def pod(
    fetch: dict[str, Any] | None = None,
    runner: dict[str, Any] | None = None,
    *,
    pod_hash: str = HASH,
    conditions: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if fetch is not None:
        status["initContainerStatuses"] = [{"name": "fetch", **fetch}]
    if runner is not None:
        status["containerStatuses"] = [{"name": "runner", **runner}]
    if conditions:
        status["conditions"] = conditions
    meta: dict[str, Any] = {"annotations": {names.POD_HASH_ANNOTATION: pod_hash}}
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


FETCHING = pod({"state": {"running": {}}})
FETCH_FAILED = pod({"state": {"terminated": {"exitCode": 3, "message": "gated repository: a token is needed\n"}}})
FETCH_BACKOFF = pod(
    {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "message": "repository not found: x/y"}},
        "restartCount": 3,
    }
)
FETCHED = {"state": {"terminated": {"exitCode": 0, "message": f"resolved {SHA}"}}}
LOADING = pod(FETCHED, {"state": {"running": {}}, "ready": False})
READY = pod(FETCHED, {"state": {"running": {}}, "ready": True})
CRASHING = pod(
    FETCHED,
    {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        "ready": False,
        "restartCount": 4,
    },
)
CRASH_LOOP = pod(
    FETCHED,
    {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}, "ready": False, "restartCount": 4},
)
IMAGE = pod({"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image x"}}})
UNSCHEDULABLE = pod(
    conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
)


def deployment(replicas: int = 1, ready: int = 0) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"replicas": replicas, "readyReplicas": ready}}


def derive(
    pods: list[dict[str, Any]],
    dep: dict[str, Any] | None = None,
    problems: list[Problem] | None = None,
    previous: dict[str, Any] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    return derive_status(
        name="sd",
        namespace="ns1",
        generation=7,
        problems=problems or [],
        observed=Observed(dep if dep is not None else deployment(replicas), pods),
        previous=previous,
        now="2030-01-01T00:00:00Z",
        port=80,
        replicas=replicas,
        pod_hash=HASH,
    )


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("pods", "dep", "phase", "reason"),
    [
        ([], None, "Pending", "WaitingForPods"),
        ([UNSCHEDULABLE], None, "Pending", "Unschedulable"),
        ([FETCHING], None, "Downloading", "Downloading"),
        ([FETCH_FAILED], None, "Failed", "FetchFailed"),
        ([FETCH_BACKOFF], None, "Failed", "FetchFailed"),
        ([LOADING], None, "Loading", "Loading"),
        ([READY], deployment(1, 1), "Ready", "Ready"),
        ([CRASHING], None, "Failed", "OOMKilled"),
        ([CRASH_LOOP], None, "Failed", "RunnerCrashLoopBackOff"),
        ([IMAGE], None, "Failed", "ImagePullBackOff"),
    ],
)
def test_phase_follows_the_pods(pods: list[dict[str, Any]], dep: dict[str, Any] | None, phase: str, reason: str) -> None:
    status = derive(pods, dep)
    assert (status["phase"], status["conditions"][0]["status"]) == (phase, "True")
    assert conditions(status)["Available"] == ("True", "ReplicasReady") if phase == "Ready" else conditions(status)["Available"][1] == reason


def test_failed_fetch_shows_the_fetcher_message() -> None:
    status = derive([FETCH_FAILED])
    assert status["message"] == "gated repository: a token is needed"
    assert conditions(status)["ModelCached"] == ("False", "FetchFailed")
    assert conditions(status)["Available"] == ("False", "FetchFailed")
    assert derive([FETCH_BACKOFF])["message"] == "repository not found: x/y"


def test_crash_loop_shows_the_reason() -> None:
    assert "raise spec.resources.limits.memory" in derive([CRASHING])["message"]
    assert "runner keeps exiting: exit code 1" in derive([CRASH_LOOP])["message"]


WAITING_FOR_VOLUME = pod(conditions=[{"type": "PodScheduled", "status": "True"}])
WAITING_FOR_VOLUME["metadata"]["name"] = "sd-abc12-xyz"


def warning(pod_name: str, reason: str, message: str, when: str = "2030-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "type": "Warning",
        "reason": reason,
        "message": message,
        "lastTimestamp": when,
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": "ns1"},
    }


def test_deployment_conditions_say_why_no_pod_comes() -> None:
    """Pods rejected at creation (a ResourceQuota) never exist: only the Deployment's ReplicaFailure says so."""
    dep = deployment(1, 0)
    dep["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "sd-1" is forbidden: failed quota: compute: must specify requests.cpu',
        }
    ]
    status = derive([], dep)
    assert (status["phase"], status["reason"]) == ("Failed", "FailedCreate")
    assert "must specify requests.cpu" in status["message"]
    assert conditions(status)["Available"] == ("False", "FailedCreate")
    dep["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out"}]
    assert derive([], dep)["reason"] == "ProgressDeadlineExceeded"


@pytest.mark.parametrize(
    ("reason", "text"),
    [("FailedScheduling", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), ("FailedMount", "MountVolume.SetUp failed for volume models")],
)
def test_warning_events_say_why_a_pod_does_not_start(reason: str, text: str) -> None:
    name = WAITING_FOR_VOLUME["metadata"]["name"]
    events = [warning(name, "FailedMount", "older", "2029-01-01T00:00:00Z"), warning(name, reason, text), warning("other-pod", "FailedMount", "not ours")]
    status = derive_status(
        name="sd",
        namespace="ns1",
        generation=1,
        problems=[],
        observed=Observed(deployment=deployment(1, 0), pods=[WAITING_FOR_VOLUME], events=events),
        previous=None,
        now="2030-01-01T00:00:00Z",
        port=80,
        replicas=1,
        pod_hash=HASH,
    )
    assert (status["phase"], status["reason"], status["message"]) == ("Pending", reason, text)


def test_ready_status_fields() -> None:
    status = derive([READY], deployment(1, 1))
    assert status["readyReplicas"] == 1 and status["replicas"] == 1 and status["observedGeneration"] == 7
    assert status["selector"] == "app.kubernetes.io/instance=sd,app.kubernetes.io/name=kubediffusers-runner"
    assert status["url"] == "http://sd.ns1.svc.cluster.local:80"
    assert status["model"] == {"resolvedRevision": SHA}
    assert conditions(status) == {
        "Valid": ("True", "SpecValid"),
        "ModelCached": ("True", "Fetched"),
        "Available": ("True", "ReplicasReady"),
        "StorageReady": ("True", "AsSpecified"),
    }


def test_some_ready_is_degraded_and_a_failing_replica_is_degraded_not_failed() -> None:
    assert derive([READY, LOADING], deployment(2, 1), replicas=2)["phase"] == "Degraded"
    assert derive([READY, FETCH_FAILED], deployment(2, 1), replicas=2)["phase"] == "Degraded"


def test_old_pods_do_not_decide_the_phase_during_a_rollout() -> None:
    old_ready = pod(FETCHED, {"state": {"running": {}}, "ready": True}, pod_hash="old")
    status = derive([old_ready, FETCHING], deployment(1, 1))
    assert status["phase"] == "Downloading" and "previous spec still serving" in status["message"]
    assert conditions(status)["Available"][0] == "True"
    assert derive([pod({"state": {"running": {}}}, deleting=True)])["phase"] == "Pending"


def test_blocking_problem_fails_and_warning_degrades() -> None:
    failed = derive([], None, [Problem("SecretNotFound", "spec.model.tokenSecretRef: Secret 'hf' not found")])
    assert failed["phase"] == "Failed" and conditions(failed)["Valid"] == ("False", "SecretNotFound")
    warn = Problem("ReadWriteOnceWithReplicas", "running 1 replica", blocking=False)
    degraded = derive([READY], deployment(1, 1), [warn])
    assert degraded["phase"] == "Degraded" and conditions(degraded)["Valid"] == ("False", "ReadWriteOnceWithReplicas")


def test_scaled_to_zero() -> None:
    status = derive([], deployment(0, 0), replicas=0)
    assert status["phase"] == "Pending" and conditions(status)["Available"] == ("False", "ScaledToZero")


def test_transition_times_kept_while_status_holds() -> None:
    first = derive([FETCHING])
    previous = {**first, "conditions": [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first["conditions"]]}
    second = derive([READY], deployment(1, 1), previous=previous)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times["Valid"] == "2020-01-01T00:00:00Z"  # still True
    assert times["Available"] == "2030-01-01T00:00:00Z"  # went False -> True
    assert derive([], previous={"model": {"resolvedRevision": SHA}})["model"]["resolvedRevision"] == SHA


def test_resolved_parsing_and_long_messages() -> None:
    assert parse_resolved(f"resolved {SHA}\n") == SHA and parse_resolved("downloaded") is None and parse_resolved(None) is None
    long = pod({"state": {"terminated": {"exitCode": 1, "message": "x" * 5000}}})
    assert len(inspect_pod(long).message) <= 1024


# ---- checks


def pipeline(**spec: Any) -> Pipeline:
    return Pipeline.from_manifest(manifest(**spec))


def test_checks_pass_for_a_plain_spec() -> None:
    assert check(pipeline(), References()) == []


def test_missing_secrets_and_keys() -> None:
    p = pipeline(model={"id": "a/b", "tokenSecretRef": {"name": "hf", "key": "token"}}, runner={"authSecretRef": {"name": "auth", "key": "t"}})
    problems = check(p, References(secrets={"hf": None, "auth": frozenset({"other"})}))
    assert [(x.reason, x.blocking) for x in problems] == [("SecretNotFound", True), ("SecretKeyNotFound", True)]
    assert problems[0].message == "spec.model.tokenSecretRef: Secret 'hf' not found in namespace 'ns1'"
    assert check(p, References(secrets={"hf": frozenset({"token"}), "auth": frozenset({"t"})})) == []


def test_read_write_once_with_replicas_is_reported_and_clamped() -> None:
    # Layout Auto gives each pod its own volume instead (test_storage_layouts.py); an explicit Shared claim is clamped.
    assert check(pipeline(replicas=3), References()) == []
    p = pipeline(replicas=3, storage={"layout": "Shared"})
    problems = check(p, References())
    assert [(x.reason, x.blocking) for x in problems] == [("ReadWriteOnceWithReplicas", False)]
    assert "spec.replicas=3" in problems[0].message and effective_replicas(p, problems) == 1
    assert check(pipeline(replicas=3, storage={"accessModes": ["ReadWriteMany"]}), References()) == []
    shared = pipeline(replicas=2, storage={"existingClaim": "cache"})
    assert check(shared, References(claim={"spec": {"accessModes": ["ReadWriteMany"]}})) == []
    assert [x.reason for x in check(shared, References(claim={"spec": {"accessModes": ["ReadWriteOnce"]}}))] == ["ReadWriteOnceWithReplicas"]
    assert [x.reason for x in check(shared, References(claim=None))] == ["ClaimNotFound"]


def test_name_and_known_model_task() -> None:
    bad_name = Pipeline.from_manifest({**manifest(), "metadata": {"name": "9lives", "namespace": "ns1"}})
    assert [x.reason for x in check(bad_name, References())] == ["InvalidName"]
    svd = pipeline(model={"id": "stabilityai/stable-video-diffusion-img2vid-xt"})
    assert [x.reason for x in check(svd, References())] == ["TaskNotSupportedByModel"]
    assert check(pipeline(task="image-to-video", model={"id": "stabilityai/stable-video-diffusion-img2vid-xt"}), References()) == []
