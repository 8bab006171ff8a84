"""The real operator through a storm of 100 pipelines against an API server that
fails (500s, lost answers, 409s, timeouts, watches ending in 410 Gone), with an
operator restart in the middle: every pipeline converges, nothing is created
twice or left orphaned, and the operator never exits on its own."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kubediffusers.operator.settings import OperatorSettings
from tests.reliability.operator_harness import OperatorThread, faulty_cluster
from tests.reliability.storm import run_storm

pytestmark = pytest.mark.slow

SETTINGS = OperatorSettings(standalone=True, resync_seconds=5.0, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test")


async def test_storm_of_100_pipelines_with_api_faults_and_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with faulty_cluster(tmp_path, monkeypatch, seed=6) as cluster:
        operator = OperatorThread(SETTINGS)
        try:
            report = await run_storm(cluster, operator, count=100, updates=40, deletes=20, restart=True, timeout=75)
        finally:
            if operator.alive:
                await operator.stop()
    summary = "\n".join(report.lines())
    print(summary)
    assert not report.problems, report.problems[:10]
    assert not report.duplicates, report.duplicates[:10]
    assert operator.crashed is None and operator.starts == 2
    # The faults really happened, of every kind.
    assert {"500", "lost answer", "409", "hang", "watch 410 Gone", "watch cut"} <= set(report.injected), summary
    # API trouble is retried, never a bug: no reconciliation raised anything but an API error.
    assert not [r for r in caplog.records if "reconciliation failed" in r.getMessage()]
    assert any("retrying" in r.getMessage() for r in caplog.records)
