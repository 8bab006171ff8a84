"""Malformed pipelines (what an old or missing CRD schema let through) end in a
status condition, never in a crash loop: no children, no retry storm, and the
operator keeps serving the good pipelines; fixing the spec recovers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from kubediffusers.operator.settings import OperatorSettings
from tests.reliability.operator_harness import NS, PIPELINES, OperatorThread, call, eventually, faulty_cluster, live, pipelines

pytestmark = pytest.mark.slow

GOOD: dict[str, Any] = {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}}

MALFORMED: dict[str, tuple[Any, str]] = {
    "spec-string": ("serve sd-turbo please", "spec: must be an object"),
    "spec-list": ([GOOD], "spec: must be an object"),
    "no-spec": (None, "spec.task"),
    "no-model-id": ({"task": "text-to-image", "model": {"revision": "main"}}, "spec.model.id"),
    "model-id-number": ({"task": "text-to-image", "model": {"id": 42}}, "spec.model.id"),
    "model-string": ({"task": "text-to-image", "model": "stabilityai/sd-turbo"}, "spec.model"),
    "replicas-string": ({**GOOD, "replicas": "three"}, "spec.replicas"),
    "replicas-negative": ({**GOOD, "replicas": -3}, "spec.replicas"),
    "size-negative": ({**GOOD, "storage": {"size": "-20Gi"}}, "spec.storage.size"),
    "size-zero": ({**GOOD, "storage": {"size": 0}}, "spec.storage.size"),
    "memory-negative": ({**GOOD, "resources": {"limits": {"memory": "-1Gi"}}}, "spec.resources.limits.memory"),
    "queue-negative": ({**GOOD, "runner": {"maxQueueSize": -1}}, "spec.runner.maxQueueSize"),
    "port-string": ({**GOOD, "service": {"port": "eighty"}}, "spec.service.port"),
    "access-modes-string": ({**GOOD, "storage": {"accessModes": "ReadWriteOnce"}}, "spec.storage.accessModes"),
    "tolerations-object": ({**GOOD, "tolerations": {"key": "gpu"}}, "spec.tolerations"),
    "env-name-number": ({**GOOD, "runner": {"env": [{"name": 5}]}}, "spec.runner.env"),
    "network-policy-string": ({**GOOD, "networkPolicy": "on"}, "spec.networkPolicy"),
}

SETTINGS = OperatorSettings(standalone=True, resync_seconds=0.5, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test")


def body(name: str, spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": name, "namespace": NS}}
    if spec is not None:
        doc["spec"] = spec
    return doc


def status_of(cluster: Any, name: str) -> dict[str, Any]:
    return (pipelines(cluster).get(name) or {}).get("status") or {}


def failed_invalid(cluster: Any, name: str) -> bool:
    status = status_of(cluster, name)
    valid = next((c for c in status.get("conditions", []) if c["type"] == "Valid"), {})
    return status.get("phase") == "Failed" and valid.get("status") == "False" and valid.get("reason") == "InvalidSpec"


async def test_malformed_pipelines_end_in_a_condition_not_a_crash_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with faulty_cluster(tmp_path, monkeypatch) as cluster:
        operator = OperatorThread(SETTINGS)
        await operator.start()
        try:
            for name, (spec, _) in MALFORMED.items():
                await call(cluster, "POST", PIPELINES, body(name, spec))
            await call(cluster, "POST", PIPELINES, body("good", GOOD))
            await eventually(
                lambda: all(failed_invalid(cluster, n) for n in MALFORMED),
                30,
                lambda: {n: status_of(cluster, n).get("message") for n in MALFORMED if not failed_invalid(cluster, n)},
            )
            for name, (_, fragment) in MALFORMED.items():
                assert fragment in status_of(cluster, name)["message"], (name, status_of(cluster, name)["message"])
            await eventually(lambda: "good" in live(cluster, "apps/v1/deployments"), 15, "the good pipeline's Deployment")

            # No crash loop: over several resync periods, nothing is retried or rewritten.
            requests_before = cluster.log.requests
            await asyncio.sleep(2.0)
            per_pipeline_per_resync = (cluster.log.requests - requests_before) / len(pipelines(cluster)) / (2.0 / SETTINGS.resync_seconds)
            assert per_pipeline_per_resync < 4, per_pipeline_per_resync  # a re-read and a re-check, nothing more
            assert operator.alive
            assert set(live(cluster, "apps/v1/deployments")) == {"good"}
            assert set(live(cluster, "v1/persistentvolumeclaims")) == {"good-models"}

            # Fixing a spec recovers the pipeline.
            await call(cluster, "PATCH", f"{PIPELINES}/size-negative", {"spec": {"storage": {"size": "20Gi"}}})
            await eventually(lambda: "size-negative" in live(cluster, "apps/v1/deployments"), 15, "children after the fix")
            await eventually(lambda: not failed_invalid(cluster, "size-negative"), 15, "status after the fix")
        finally:
            await operator.stop()
    assert operator.crashed is None
    assert not [r for r in caplog.records if "reconciliation failed" in r.getMessage()], "a malformed spec raised instead of ending in a condition"
