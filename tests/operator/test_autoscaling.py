"""spec.autoscaling with the real operator against the emulator, with and without KEDA's CRDs.

The emulator answers 404 for resources nobody installed, as an API server does, so
"KEDA is not installed" is the real answer the operator gets. The tests play KEDA's
part: its controller writes the ScaledObject's Ready condition, its HPA writes the
pipeline's replicas through the scale subresource.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubediffusers.operator.builders.autoscaling import PAUSED_ANNOTATION
from kubediffusers.operator.runtime import Runtime
from tests.operator.fakecluster import KEDA_HTTP_RESOURCE, KEDA_RESOURCE, FakeCluster, register_keda
from tests.operator.helpers import NS, PIPELINES, call, create_pipeline, deployment, manifest, obj, pipeline_status
from tests.operator.helpers import settle as eventually

pytestmark = pytest.mark.slow

PROMETHEUS = "http://prometheus.monitoring:9090"
SCALED_OBJECTS = f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects"
AUTO = {"minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 2, "prometheusAddress": PROMETHEUS}


@pytest.fixture
def keda(cluster: FakeCluster) -> FakeCluster:
    """KEDA and its HTTP add-on installed before the operator starts."""
    register_keda(cluster)
    return cluster


def condition(cluster: FakeCluster, type_: str) -> dict[str, Any]:
    return next((c for c in pipeline_status(cluster).get("conditions", []) if c["type"] == type_), {})


def keda_writes(cluster: FakeCluster) -> list[Any]:
    return [r for r in list(cluster) if r.method in ("POST", "PATCH") and r.resource is not None and r.resource.group in ("keda.sh", "http.keda.sh")]


async def scale(cluster: FakeCluster, replicas: int) -> None:
    """What KEDA's HPA does: write the pipeline's replicas through its scale subresource."""
    await call(cluster, "PATCH", f"{PIPELINES}/sd/scale", {"spec": {"replicas": replicas}})


def replicas(cluster: FakeCluster) -> int | None:
    return ((deployment(cluster) or {}).get("spec") or {}).get("replicas")


async def test_without_keda_the_pipeline_serves_and_says_why_until_keda_is_installed(cluster: FakeCluster, operator: Runtime) -> None:
    await create_pipeline(cluster, manifest(replicas=2, autoscaling=AUTO))
    await eventually(lambda: condition(cluster, "Autoscaling").get("reason") == "KEDANotInstalled", what="KEDANotInstalled")
    auto = condition(cluster, "Autoscaling")
    assert auto["status"] == "False" and "KEDA is not installed" in auto["message"] and "spec.replicas=2" in auto["message"]
    assert condition(cluster, "Valid")["reason"] == "KEDANotInstalled"  # not blocking: the pipeline is built
    assert replicas(cluster) == 2 and obj(cluster, "v1/services", "sd") is not None
    assert keda_writes(cluster) == []  # nothing half made

    register_keda(cluster)  # KEDA installed: the next resync makes the ScaledObject
    so = await eventually(lambda: obj(cluster, KEDA_RESOURCE, "sd"), what="ScaledObject")
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "name": "sd"}
    assert so["metadata"]["ownerReferences"][0]["name"] == "sd"
    await eventually(lambda: condition(cluster, "Autoscaling").get("reason") == "WaitingForKEDA", what="WaitingForKEDA")
    assert pipeline_status(cluster)["autoscaling"]["scaledObject"] == "sd"
    assert "kubediffusers_queue_depth" in pipeline_status(cluster)["autoscaling"]["query"]

    # KEDA's controller reports; its HPA moves the replicas through the scale subresource.
    ready = {"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ScaledObject is defined correctly and is ready for scaling"}
    await call(cluster, "PATCH", f"{SCALED_OBJECTS}/sd/status", {"status": {"conditions": [ready]}})
    await eventually(lambda: condition(cluster, "Autoscaling").get("status") == "True", what="Autoscaling True")
    assert condition(cluster, "Valid")["status"] == "True"
    await scale(cluster, 3)
    await eventually(lambda: replicas(cluster) == 3, what="3 replicas")
    await scale(cluster, 1)
    await eventually(lambda: replicas(cluster) == 1, what="1 replica")
    # KEDA cannot reach Prometheus: its words reach the pipeline.
    broken = {"type": "Ready", "status": "False", "reason": "ScaledObjectCheckFailed", "message": "prometheus query failed: connection refused"}
    await call(cluster, "PATCH", f"{SCALED_OBJECTS}/sd/status", {"status": {"conditions": [broken]}})
    await eventually(lambda: condition(cluster, "Autoscaling").get("reason") == "ScaledObjectCheckFailed", what="KEDA's reason")
    assert "connection refused" in condition(cluster, "Autoscaling")["message"]


async def test_scale_to_zero_is_all_or_nothing_and_keeps_the_service_name(cluster: FakeCluster, operator: Runtime) -> None:
    register_keda(cluster, http_add_on=False)
    await create_pipeline(cluster, manifest(autoscaling={**AUTO, "minReplicas": 0}))
    await eventually(lambda: condition(cluster, "Autoscaling").get("reason") == "HTTPAddOnNotInstalled", what="HTTPAddOnNotInstalled")
    # KEDA alone could take the pipeline to zero with nothing to wake it: no ScaledObject either.
    assert keda_writes(cluster) == [] and obj(cluster, KEDA_RESOURCE, "sd") is None
    assert obj(cluster, "v1/services", "sd")["spec"]["type"] == "ClusterIP"  # type: ignore[index]

    register_keda(cluster)  # the HTTP add-on too
    await eventually(lambda: (obj(cluster, "v1/services", "sd") or {}).get("spec", {}).get("type") == "ExternalName", what="ExternalName Service")
    front = obj(cluster, "v1/services", "sd")
    assert front is not None and front["spec"]["externalName"] == "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
    backend = obj(cluster, "v1/services", "sd-backend")
    assert backend is not None and backend["spec"]["ports"][0]["port"] == 8000
    httpso = obj(cluster, KEDA_HTTP_RESOURCE, "sd")
    assert httpso is not None and httpso["spec"]["scaleTargetRef"]["service"] == "sd-backend"
    so = obj(cluster, KEDA_RESOURCE, "sd")
    assert so is not None and {t["type"] for t in so["spec"]["triggers"]} == {"prometheus", "external-push"}
    status = await eventually(lambda: pipeline_status(cluster).get("url", "").endswith(":8080") and pipeline_status(cluster), what="url of the interceptor")
    assert status["url"] == f"http://sd.{NS}.svc.cluster.local:8080"
    assert status["autoscaling"]["httpScaledObject"] == "sd"

    await scale(cluster, 0)  # idle: KEDA goes to zero
    await eventually(lambda: replicas(cluster) == 0 and condition(cluster, "Available").get("reason") == "ScaledToZero", what="zero replicas")
    assert pipeline_status(cluster)["phase"] == "Pending"
    await scale(cluster, 1)  # a request is pending at the interceptor: KEDA wakes it
    await eventually(lambda: replicas(cluster) == 1, what="woken up")


async def test_turning_autoscaling_off_pauses_the_scaled_object(keda: FakeCluster, operator: Runtime) -> None:
    cluster = keda
    await create_pipeline(cluster, manifest(autoscaling={**AUTO, "minReplicas": 0}))
    await eventually(lambda: obj(cluster, KEDA_RESOURCE, "sd") and (obj(cluster, "v1/services", "sd") or {}).get("spec", {}).get("type") == "ExternalName")
    await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"autoscaling": None, "replicas": 2}})
    paused = await eventually(
        lambda: ((obj(cluster, KEDA_RESOURCE, "sd") or {}).get("metadata", {}).get("annotations") or {}).get(PAUSED_ANNOTATION) == "true", what="paused"
    )
    assert paused
    await eventually(lambda: (obj(cluster, "v1/services", "sd") or {}).get("spec", {}).get("type") == "ClusterIP", what="Service back to ClusterIP")
    await eventually(lambda: replicas(cluster) == 2, what="the user's replicas")
    await eventually(lambda: "autoscaling" not in pipeline_status(cluster) and not condition(cluster, "Autoscaling"), what="no autoscaling status")
    assert pipeline_status(cluster)["url"] == f"http://sd.{NS}.svc.cluster.local:80"


async def test_no_prometheus_address_makes_no_keda_object(keda: FakeCluster, operator: Runtime) -> None:
    cluster = keda
    await create_pipeline(cluster, manifest(autoscaling={"maxReplicas": 2}))
    await eventually(lambda: condition(cluster, "Autoscaling").get("reason") == "PrometheusAddressMissing", what="PrometheusAddressMissing")
    assert "autoscaling.prometheusAddress" in condition(cluster, "Autoscaling")["message"]
    assert deployment(cluster) is not None and keda_writes(cluster) == []


def test_the_load_simulation_runs_and_scales_out_after_the_burst() -> None:
    """hack/sim_autoscaling.py (its figures are in docs/scaling.md) against the emulator, shortened."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "hack" / "sim_autoscaling.py"
    result = subprocess.run(
        [sys.executable, str(script), "--duration", "75", "--burst-at", "5", "--every", "5", "--cold-start", "10"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line[:1] == " " and line.split()[0].isdigit()]
    spec_replicas = [int(row[7]) for row in rows]
    assert spec_replicas[0] == 1 and max(spec_replicas) > 1  # the burst scaled the pipeline out
    assert "the operator carried" in result.stdout
    bad = subprocess.run([sys.executable, str(script), "--min", "3", "--max", "2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--min <= --max" in bad.stderr
