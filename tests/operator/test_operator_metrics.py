"""The operator's /metrics: reconciliations, errors and pipelines by phase, scraped over
HTTP from the real endpoint and parsed with Prometheus' own text parser."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter
from prometheus_client.parser import text_string_to_metric_families

from kubediffusers.operator import runtime as runtime_module
from kubediffusers.operator.kube import ApiError
from kubediffusers.operator.metrics import OperatorMetrics
from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.fakecluster import FakeCluster
from tests.operator.helpers import NS, TIMEOUT, create_pipeline, manifest, pipeline_status
from tests.operator.helpers import settle as eventually

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


def test_every_series_exists_from_the_start() -> None:
    metrics = OperatorMetrics()
    port = metrics.serve(0, addr="127.0.0.1")
    try:
        samples = scrape(port)
    finally:
        metrics.close()
    for phase in ("Pending", "Downloading", "Loading", "Ready", "Degraded", "Failed"):
        assert value(samples, "kubediffusers_operator_pipelines", phase=phase) == 0
    assert value(samples, "kubediffusers_operator_reconciliations_total", result="ok") == 0
    assert value(samples, "kubediffusers_operator_reconcile_errors_total", kind="api") == 0
    assert value(samples, "kubediffusers_operator_reconcile_duration_seconds_count") == 0
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_phases_count_pipelines_once_and_forget_them() -> None:
    metrics = OperatorMetrics()
    metrics.phase(("a", "x"), "Ready")
    metrics.phase(("a", "y"), "Ready")
    metrics.phase(("a", "x"), "Degraded")  # moves, not added
    metrics.phase(("a", "y"), None)
    got = {s.labels["phase"]: s.value for f in metrics.registry.collect() if f.name == "kubediffusers_operator_pipelines" for s in f.samples}
    assert got == {"Pending": 0, "Downloading": 0, "Loading": 0, "Ready": 0, "Degraded": 1, "Failed": 0}


async def test_errors_are_counted_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtime.serve's loop (the kopf daemon's body) with reconcile failing, then succeeding."""
    outcomes: list[Any] = [ApiError(503, "ServiceUnavailable", "etcd"), RuntimeError("a bug"), None]

    async def fake_reconcile(*_: Any) -> Any:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        setter.set()  # the last one: stop the loop (None: the pipeline is gone)
        return outcome

    monkeypatch.setattr(runtime_module, "reconcile", fake_reconcile)
    runtime = Runtime(OperatorSettings(retry_seconds=0.01, resync_seconds=0.05))
    runtime.connection = kopf.ConnectionInfo(server="http://127.0.0.1:1")
    setter: FlagSetter[Any] = FlagSetter()
    body = {"metadata": {"namespace": NS, "name": "sd"}}
    await asyncio.wait_for(runtime.serve(body, AsyncFlagWaiter(setter), logging.getLogger("test")), 10)
    await runtime.close()
    samples = {(s.name, tuple(s.labels.items())): s.value for f in runtime.metrics.registry.collect() for s in f.samples}
    assert samples[("kubediffusers_operator_reconcile_errors_total", (("kind", "api"),))] == 1
    assert samples[("kubediffusers_operator_reconcile_errors_total", (("kind", "internal"),))] == 1
    assert samples[("kubediffusers_operator_reconciliations_total", (("result", "error"),))] == 2
    assert samples[("kubediffusers_operator_reconciliations_total", (("result", "ok"),))] == 1
    assert samples[("kubediffusers_operator_reconcile_duration_seconds_count", ())] == 3


@pytest.fixture
async def metered(cluster: FakeCluster) -> AsyncIterator[tuple[Runtime, int]]:
    import threading

    port = free_port()
    settings = OperatorSettings(standalone=True, resync_seconds=1.0, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test", metrics_port=port)
    runtime = Runtime(settings)
    stop, ready = threading.Event(), threading.Event()
    coro = kopf.operator(clusterwide=True, memo=kopf.Memo(runtime=runtime), stop_flag=stop, ready_flag=ready)
    thread = threading.Thread(target=asyncio.run, args=(coro,), name="kopf-operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, TIMEOUT), "the operator did not start"
    yield runtime, port
    stop.set()
    await asyncio.to_thread(thread.join, TIMEOUT)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # the endpoint went with the operator
        scrape(port)


async def test_the_running_operator_exports_reconciles_and_phases(cluster: FakeCluster, metered: tuple[Runtime, int]) -> None:
    _, port = metered
    await create_pipeline(cluster, manifest("good"))
    await create_pipeline(cluster, manifest("bad", model={"id": "not a repo id"}))
    await eventually(lambda: pipeline_status(cluster, "good").get("phase") and pipeline_status(cluster, "bad").get("phase"), what="both phases")
    good, bad = pipeline_status(cluster, "good")["phase"], pipeline_status(cluster, "bad")["phase"]
    assert bad == "Failed" and good != "Failed"

    def exported() -> Any:
        samples = scrape(port)
        return samples if value(samples, "kubediffusers_operator_pipelines", phase="Failed") == 1 else None

    samples = await eventually(exported, what="the phases on /metrics")
    assert value(samples, "kubediffusers_operator_pipelines", phase=good) == 1
    assert sum(v for (name, _), v in samples.items() if name == "kubediffusers_operator_pipelines") == 2
    assert value(samples, "kubediffusers_operator_reconciliations_total", result="ok") >= 2
