"""A create/update/delete storm of pipelines against a faulty emulated API server,
with an operator restart in the middle. Shared by the test and hack/reliability.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.faultycluster import FaultyCluster
from tests.reliability.operator_harness import CHILD_RESOURCES, NS, PIPELINES, OperatorThread, call, eventually, live, pipelines


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubediffusers.io/v1alpha1",
        "kind": "InferencePipeline",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}, "runner": {"image": "runner:v1"}},
    }


def child_names(name: str) -> dict[str, str]:
    return {"apps/v1/deployments": name, "v1/services": name, "v1/persistentvolumeclaims": f"{name}-models"}


@dataclass
class StormReport:
    pipelines: int
    updated: int
    deleted: int
    restarts: int
    seconds_to_converge: float = 0.0
    problems: list[str] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    operator_requests: int = 0
    duplicates: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"pipelines: {self.pipelines} created, {self.updated} updated, {self.deleted} deleted, operator restarts: {self.restarts}",
            f"converged in {self.seconds_to_converge:.1f}s; operator requests: {self.operator_requests}; faults injected: {dict(sorted(self.injected.items()))}",
            f"duplicate creations: {len(self.duplicates)}; problems left: {len(self.problems)}",
        ]


def convergence_problems(cluster: FaultyCluster, surviving: set[str], images: dict[str, str]) -> list[str]:
    problems = []
    current = pipelines(cluster)
    if set(current) != surviving:
        problems.append(f"pipelines: {len(set(current) - surviving)} not deleted, {len(surviving - set(current))} missing")
    children = {resource: live(cluster, resource) for resource in CHILD_RESOURCES}
    expected = {resource: {child_names(n)[resource] for n in surviving} for resource in CHILD_RESOURCES}
    for resource, objs in children.items():
        extra, missing = set(objs) - expected[resource], expected[resource] - set(objs)
        if extra:
            problems.append(f"{CHILD_RESOURCES[resource]}: {len(extra)} orphaned, e.g. {sorted(extra)[:3]}")
        if missing:
            problems.append(f"{CHILD_RESOURCES[resource]}: {len(missing)} missing, e.g. {sorted(missing)[:3]}")
    for name in sorted(surviving & set(current)):
        body = current[name]
        uid = body["metadata"]["uid"]
        for resource, child in child_names(name).items():
            obj = children[resource].get(child)
            if obj is None:
                continue
            owners = [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []]
            if owners != [uid]:
                problems.append(f"{CHILD_RESOURCES[resource]} {child}: owners {owners}, pipeline uid {uid}")
        dep = children["apps/v1/deployments"].get(name)
        if dep is not None:
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            if image != images[name]:
                problems.append(f"Deployment {name}: image {image}, want {images[name]}")
        status = body.get("status") or {}
        if not status.get("phase") or status.get("observedGeneration") != body["metadata"].get("generation"):
            problems.append(
                f"pipeline {name}: status {status.get('phase')} observedGeneration {status.get('observedGeneration')} of {body['metadata'].get('generation')}"
            )
    return problems


async def run_storm(
    cluster: FaultyCluster,
    operator: OperatorThread,
    *,
    count: int = 100,
    updates: int = 40,
    deletes: int = 20,
    restart: bool = True,
    timeout: float = 120.0,
    parallel: int = 25,
) -> StormReport:
    names = [f"p{i:03d}" for i in range(count)]
    updated, deleted = names[:updates], names[count - deletes :]
    images = {n: ("runner:v2" if n in updated else "runner:v1") for n in names}
    report = StormReport(pipelines=count, updated=updates, deleted=deletes, restarts=int(restart))
    gate = asyncio.Semaphore(parallel)

    async def limited(coro: Any) -> Any:
        async with gate:
            return await coro

    cluster.faults_on = True
    started = time.monotonic()
    await operator.start()
    # Creations; updates and deletions follow at once, while the first reconciliations run.
    await asyncio.gather(*(limited(call(cluster, "POST", PIPELINES, manifest(n))) for n in names))
    await asyncio.gather(
        *(limited(call(cluster, "PATCH", f"{PIPELINES}/{n}", {"spec": {"runner": {"image": "runner:v2"}}})) for n in updated),
        *(limited(call(cluster, "DELETE", f"{PIPELINES}/{n}", ok=(404,))) for n in deleted),
    )
    if restart:
        # Restart when about half of the pipelines have their Deployment: mid-storm.
        await eventually(lambda: len(live(cluster, "apps/v1/deployments")) >= count // 2, timeout, "half of the Deployments")
        await operator.stop()
        await operator.start()
    surviving = set(names) - set(deleted)
    try:
        await eventually(
            lambda: operator.alive and not convergence_problems(cluster, surviving, images),
            timeout,
            lambda: "; ".join(convergence_problems(cluster, surviving, images)[:8]) + f" (operator alive: {operator.alive})",
        )
    finally:
        report.seconds_to_converge = time.monotonic() - started
        report.injected = dict(cluster.log.injected)
        report.operator_requests = cluster.log.requests
        report.problems = convergence_problems(cluster, surviving, images)
        child_keys = {(path, name) for (path, name) in cluster.log.created if not path.endswith("/events") and "inferencepipelines" not in path}
        report.duplicates = [f"{path} {name}: {cluster.log.created[path, name]}" for path, name in sorted(child_keys) if cluster.log.created[path, name] > 1]
    return report
