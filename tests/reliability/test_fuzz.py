"""schemathesis against real runner processes, from the runner's own OpenAPI.

Bounded here (tens of cases per operation and mode, well under a minute on two
cores); `hack/reliability.py fuzz` runs thousands and docs/reliability.md records them.
"""

from __future__ import annotations

import pytest

from tests.reliability.fuzz import RouteReport, fuzz_server
from tests.reliability.procs import RunnerProcess

pytestmark = pytest.mark.slow

JOB_ROUTES = {"/jobs/{job_id}": 8, "/jobs/{job_id}/result": 8}


def assert_clean(reports: list[RouteReport], route: str, runner: RunnerProcess) -> None:
    summary = "\n".join(r.line() for r in reports)
    failures = [f for r in reports for f in r.failures]
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20]) + "\n" + summary
    main = [r for r in reports if r.label.endswith(route)]
    assert {r.mode for r in main} == {"positive", "negative"}, summary
    assert all(r.cases >= 20 for r in main), summary  # hypothesis really generated them
    # Both refusals and real generations happened: the fuzzing reached the pipeline.
    statuses = sum((r.statuses for r in main), start=type(main[0].statuses)())
    # (In the full suite's order the multipart fuzz sometimes draws no 400 or no 200 among
    # its cases; at least one answer past schema validation is what proves the reach.)
    assert statuses[422] >= 1 and statuses[200] + statuses[400] >= 1, summary
    # Still alive, ready, and serving a good request.
    assert runner.alive()
    good = runner.good_request()
    assert good.status_code == 200, good.text
    assert good.json()["images"][0]["url"].startswith("data:image/png;base64,")
    assert "Traceback" not in runner.output()


def test_fuzz_text_to_image(t2i_proc: RunnerProcess) -> None:
    reports = fuzz_server(t2i_proc.url, max_examples=30, examples_for=JOB_ROUTES)
    assert_clean(reports, "/text-to-image", t2i_proc)


def test_fuzz_image_to_image_multipart(i2i_proc: RunnerProcess) -> None:
    reports = fuzz_server(i2i_proc.url, max_examples=30, examples_for=JOB_ROUTES)
    assert_clean(reports, "/image-to-image", i2i_proc)
