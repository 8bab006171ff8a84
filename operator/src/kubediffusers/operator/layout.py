"""Where each replica's model cache lives: the storage layout (spec.storage.layout).

Shared: every pod mounts one claim, ``<name>-models`` or an ``existingClaim``. The
model is fetched once, and a pod that starts later (scale-out, a rollout, a node
drain, waking from zero) only loads it. Several replicas on one claim need
ReadWriteMany (or pods that all land on the claim's node).

PerPod: each pod gets its own claim as a generic ephemeral volume (a
``volumeClaimTemplate`` in the pod; Kubernetes names the claim ``<pod>-models`` and
deletes it with the pod). Any number of replicas then runs on ReadWriteOnce storage,
which is all many clusters offer. The cost: every new pod downloads the model before
it loads it (minutes for SDXL-sized checkpoints; the same on every scale-out and every
wake from zero).

Chosen over StatefulSet-style per-replica claims (``volumeClaimTemplates``), whose
claims outlive their pods so replica N finds its cache again after a scale-down:
they would make the workload a StatefulSet (ordered, one-at-a-time rollouts, a second
status path), leave ``maxReplicas`` claims billed while the pipeline idles at zero, and
pin each ordinal to the zone its volume was made in, which is where scarce GPU nodes
hurt most. The pipelines that most need fast scale-out are better served by a
ReadWriteMany claim (Shared); PerPod is the layout that works everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from . import names
from .spec import InferencePipelineSpec

Layout = Literal["Shared", "PerPod"]
SINGLE_NODE_MODES = frozenset({"ReadWriteOnce", "ReadWriteOncePod"})


def single_node(modes: Iterable[str]) -> bool:
    """Whether a claim with these access modes can be mounted on one node only."""
    modes = set(modes)
    return bool(modes) and "ReadWriteMany" not in modes and bool(modes & SINGLE_NODE_MODES)


def storage_layout(spec: InferencePipelineSpec) -> Layout:
    storage = spec.storage
    if storage.layout != "Auto":
        return storage.layout
    if storage.existing_claim:
        return "Shared"  # the user chose the claim; its access modes are checked in checks.py
    # Decided by the most replicas the spec allows, not the current count, so the
    # autoscaler moving replicas never changes the pod template.
    if single_node(storage.access_modes) and spec.most_replicas() > 1:
        return "PerPod"
    return "Shared"


def per_pod_volume(spec: InferencePipelineSpec, pipeline: str) -> dict[str, Any]:
    """The pod's ``models`` volume for layout PerPod: a generic ephemeral volume."""
    claim: dict[str, Any] = {"accessModes": list(spec.storage.access_modes), "resources": {"requests": {"storage": spec.storage.size}}}
    if spec.storage.storage_class_name is not None:
        claim["storageClassName"] = spec.storage.storage_class_name
    return {"name": "models", "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": names.labels(pipeline)}, "spec": claim}}}
