"""Overload and soak on a real runner process (queue of 4, tiny model).

Short versions: `hack/reliability.py overload|soak` runs the long ones recorded in
docs/reliability.md. Out-of-memory on the GPU (simulated by injecting
torch.OutOfMemoryError) is tests/runner/test_queue.py::test_out_of_memory_answers_clearly_and_the_next_request_succeeds.
"""

from __future__ import annotations

import pytest

from tests.reliability.load import overload, soak
from tests.reliability.procs import QUEUE, RunnerProcess

pytestmark = pytest.mark.slow

CLIENTS = 64  # 16 times what the queue holds (one running + 4 waiting)


def test_overload_accepts_what_fits_and_refuses_the_rest_with_retry_after(t2i_proc: RunnerProcess) -> None:
    report = overload(t2i_proc, CLIENTS, rounds=3)
    summary = "\n".join(report.lines())
    assert not report.problems, report.problems[:10]
    assert set(report.statuses) == {200, 503}, summary
    assert sum(report.statuses.values()) == CLIENTS * 3
    # Each burst fills the worker and the queue at least once; the rest are refused.
    assert report.statuses[200] >= QUEUE + 1, summary
    assert report.statuses[503] >= CLIENTS * 3 // 2, summary
    assert all(value.isdigit() and int(value) >= 1 for value in report.retry_after), summary
    # Accepted requests wait at most for a full queue ahead of them (generous for a shared 2-core box).
    assert max(report.accepted_latencies) < (QUEUE + 1) * report.single * 4 + 2.0, summary
    # Refusals are immediate: nobody waits to be told to come back later.
    assert max(report.rejected_latencies) < 2.0, summary
    # Memory, threads and sockets come back.
    assert report.after.rss <= report.before.rss * 1.05, summary
    assert report.after.fds <= report.before.fds + 2, summary
    assert t2i_proc.good_request().status_code == 200


def test_soak_has_no_memory_thread_or_fd_growth(t2i_proc: RunnerProcess) -> None:
    report = soak(t2i_proc, requests=300, warmup=50)
    summary = "\n".join(report.lines())
    assert not report.problems, report.problems[:10]
    assert report.rss_growth < 0.05, summary
    assert report.final.threads <= report.baseline.threads, summary
    assert report.final.fds <= report.baseline.fds + 2, summary
    assert t2i_proc.alive()
