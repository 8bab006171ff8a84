"""Checks the schema cannot express: they need other objects or cross-field rules.

Pure: the caller fetches what is referenced (``References``) and passes it in.
A ``Problem`` that blocks stops the operator from touching the children at all, so
a bad spec never leaves half-built objects; a non-blocking one is reported and the
operator carries on (e.g. it runs one replica on a ReadWriteOnce claim).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .layout import SINGLE_NODE_MODES, storage_layout
from .pipeline import Pipeline
from .spec import SecretKeyRef, Task, is_dns_label

__all__ = ["SINGLE_NODE_MODES", "Problem", "References", "check", "effective_replicas", "secret_refs"]

# Models whose task is known for sure; anything else is trusted to the runner.
KNOWN_MODEL_TASKS: Mapping[str, frozenset[Task]] = {
    "stabilityai/stable-video-diffusion-img2vid": frozenset({Task.IMAGE_TO_VIDEO}),
    "stabilityai/stable-video-diffusion-img2vid-xt": frozenset({Task.IMAGE_TO_VIDEO}),
    "stabilityai/stable-video-diffusion-img2vid-xt-1-1": frozenset({Task.IMAGE_TO_VIDEO}),
    "stabilityai/stable-diffusion-x4-upscaler": frozenset({Task.UPSCALE}),
    "stabilityai/sd-x2-latent-upscaler": frozenset({Task.UPSCALE}),
    "lambdalabs/sd-image-variations-diffusers": frozenset({Task.IMAGE_VARIATION}),
    "stabilityai/stable-diffusion-2-inpainting": frozenset({Task.INPAINTING}),
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": frozenset({Task.INPAINTING}),
    "stabilityai/sd-turbo": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE}),
    "stabilityai/sdxl-turbo": frozenset({Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE}),
}


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    blocking: bool = True


@dataclass(frozen=True)
class References:
    """What the spec refers to, as found in the cluster.

    ``secrets`` maps a Secret name to the keys it holds, or None when it does not
    exist. ``claim`` is the existing claim (a PVC dict), or None when it does not exist.
    """

    secrets: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    claim: Mapping[str, Any] | None = None


def secret_refs(pipeline: Pipeline) -> dict[str, SecretKeyRef]:
    """The Secret references of a spec, by the field that names them."""
    refs = {"spec.model.tokenSecretRef": pipeline.spec.model.token_secret_ref, "spec.runner.authSecretRef": pipeline.spec.runner.auth_secret_ref}
    return {path: ref for path, ref in refs.items() if ref is not None}


def check(pipeline: Pipeline, refs: References) -> list[Problem]:
    problems: list[Problem] = []
    spec = pipeline.spec
    if not is_dns_label(pipeline.name):
        problems.append(
            Problem(
                "InvalidName",
                f"metadata.name {pipeline.name!r} must be a DNS label (a-z, 0-9, '-', starting with a letter, at most 63 characters): it names a Service",
            )
        )
    for path, ref in secret_refs(pipeline).items():
        if ref.name not in refs.secrets:
            continue  # not read (OperatorSettings.check_secret_keys is off)
        keys = refs.secrets[ref.name]
        if keys is None:
            problems.append(Problem("SecretNotFound", f"{path}: Secret {ref.name!r} not found in namespace {pipeline.namespace!r}"))
        elif ref.key not in keys:
            problems.append(Problem("SecretKeyNotFound", f"{path}: Secret {ref.name!r} has no key {ref.key!r}"))
    known = KNOWN_MODEL_TASKS.get(spec.model.id)
    if known is not None and spec.task not in known:
        tasks = ", ".join(sorted(t.value for t in known))
        problems.append(Problem("TaskNotSupportedByModel", f"spec.task {spec.task.value!r}: model {spec.model.id!r} does {tasks}"))
    if spec.storage.existing_claim:
        if refs.claim is None:
            problems.append(
                Problem(
                    "ClaimNotFound",
                    f"spec.storage.existingClaim: PersistentVolumeClaim {spec.storage.existing_claim!r} not found in namespace {pipeline.namespace!r}",
                )
            )
        else:
            modes = set((refs.claim.get("spec") or {}).get("accessModes") or [])
            problems += _replica_problems(pipeline, modes, f"claim {spec.storage.existing_claim!r}")
    elif storage_layout(spec) == "Shared":  # PerPod: each pod has a claim of its own, any access mode serves
        problems += _replica_problems(pipeline, set(spec.storage.access_modes), f"claim {pipeline.name}-models")
    if spec.runner.shared_jobs and storage_layout(spec) == "PerPod":
        problems.append(
            Problem(
                "SharedJobsNeedSharedClaim",
                "spec.runner.sharedJobs: true keeps async jobs on a claim every replica mounts, but storage layout PerPod gives each pod "
                "its own; use layout Shared with accessModes [ReadWriteMany] (or a ReadWriteMany existingClaim), or leave sharedJobs unset",
            )
        )
    return problems


def _replica_problems(pipeline: Pipeline, modes: set[str], what: str) -> list[Problem]:
    if pipeline.spec.replicas > 1 and modes and "ReadWriteMany" not in modes and modes & SINGLE_NODE_MODES:
        return [
            Problem(
                "ReadWriteOnceWithReplicas",
                f"spec.replicas={pipeline.spec.replicas} but the {what} is {'/'.join(sorted(modes))}: pods on other nodes could not mount it; "
                "running 1 replica. Use storage.layout PerPod (a cache volume per pod), storage.accessModes [ReadWriteMany] "
                "or a ReadWriteMany existingClaim to scale out",
                blocking=False,
            )
        ]
    return []


def effective_replicas(pipeline: Pipeline, problems: list[Problem]) -> int:
    if any(p.reason == "ReadWriteOnceWithReplicas" for p in problems):
        return 1
    return pipeline.spec.replicas
