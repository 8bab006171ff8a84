"""Whether the runner keeps async jobs on the shared claim (spec.runner.sharedJobs).

A runner keeps an async job in its memory by default; the Service load-balances,
so with several replicas a poll can reach a pod that never saw the job. When every
pod mounts one claim that every node can mount (layout Shared, ReadWriteMany),
the runner can keep its jobs there instead (``kubediffusers.runner.jobfiles``),
and every replica answers for every job. Other layouts keep in-memory jobs and
rely on the Service's sessionAffinity (docs/operator.md, "Async jobs with
several replicas").

One name from the CR to the runner: spec.runner.sharedJobs ->
KUBEDIFFUSERS_SHARED_JOBS -> RunnerSettings.shared_jobs; the directory
(KUBEDIFFUSERS_JOBS_DIR, relative to the model directory) is the operator's
choice: one per pipeline, since an existingClaim may serve several.
"""

from __future__ import annotations

from .layout import storage_layout
from .spec import InferencePipelineSpec

JOBS_ROOT = ".kubediffusers-jobs"


def claim_is_shared(spec: InferencePipelineSpec, claim_modes: frozenset[str] | None) -> bool:
    """Whether every pod mounts the same claim and any node can: layout Shared on ReadWriteMany.

    ``claim_modes``: the access modes of the existingClaim as found in the cluster (None: not known, so not shared).
    """
    if storage_layout(spec) != "Shared":
        return False
    modes = claim_modes if spec.storage.existing_claim else frozenset(spec.storage.access_modes)
    return "ReadWriteMany" in (modes or frozenset())


def shared_jobs(spec: InferencePipelineSpec, claim_modes: frozenset[str] | None = None) -> bool:
    """spec.runner.sharedJobs, or when unset: on for a Shared ReadWriteMany claim, off otherwise."""
    if spec.runner.shared_jobs is not None:
        return spec.runner.shared_jobs and storage_layout(spec) == "Shared"  # PerPod: refused by checks.py
    return claim_is_shared(spec, claim_modes)


def jobs_settings(name: str, spec: InferencePipelineSpec, claim_modes: frozenset[str] | None = None) -> dict[str, str]:
    """The runner settings that turn shared jobs on, or none (the runner's default: in memory)."""
    if not shared_jobs(spec, claim_modes):
        return {}
    return {"shared_jobs": "true", "jobs_dir": f"{JOBS_ROOT}/{name}"}
