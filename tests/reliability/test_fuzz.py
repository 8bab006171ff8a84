"""schemathesis against real runner processes, from the runner's own OpenAPI.

Bounded here (tens of cases per operation and mode, well under a minute on two
cores); `hack/reliability.py fuzz` runs thousands and docs/reliability.md records them.

The drawn cases must never get a 5xx (but 503 + Retry-After), an answer off the
error shapes or a traceback; which statuses they draw depends on the modules
loaded in the process (tests/reliability/fuzz.py says why), so the reach past
schema validation is proven by explicit cases with the status each must get:
a generation (200), an async job (202), a refusal by the runner's limits or an
unreadable upload (400) and schema violations (422), through the same calls
and checks.
"""

from __future__ import annotations

import pytest

from tests.reliability.fuzz import Explicit, RouteReport, fuzz_server
from tests.reliability.procs import RunnerProcess, png_bytes

pytestmark = pytest.mark.slow

JOB_ROUTES = {"/jobs/{job_id}": 8, "/jobs/{job_id}/result": 8}
JSON = "application/json"
FORM = "multipart/form-data"

# The runners' cheap limits (procs.CHEAP_LIMITS): at most 2 steps, 64x64, one image.
TEXT_TO_IMAGE = [
    Explicit(200, {"body": {"prompt": "a lighthouse", "num_inference_steps": 1, "seed": 1}, "media_type": JSON}, "a cheap generation"),
    Explicit(202, {"body": {"prompt": "a lighthouse", "num_inference_steps": 1}, "media_type": JSON, "query": {"async": True}}, "an async job"),
    Explicit(400, {"body": {"prompt": "a lighthouse", "num_inference_steps": 3}, "media_type": JSON}, "steps past the runner's limit"),
    Explicit(400, {"body": {"prompt": ""}, "media_type": JSON}, "an empty prompt (livepeer's 400)"),
    Explicit(422, {"body": {"prompt": "a lighthouse", "seed": -1, "colour": "red"}, "media_type": JSON}, "a negative seed and an unknown field"),
    Explicit(422, {"body": {"num_inference_steps": 1}, "media_type": JSON}, "no prompt"),
]
IMAGE_TO_IMAGE = [
    Explicit(200, {"body": {"prompt": "a lighthouse", "num_inference_steps": 2, "image": png_bytes()}, "media_type": FORM}, "a cheap generation"),
    Explicit(400, {"body": {"prompt": "a lighthouse", "num_inference_steps": 2, "image": b"not an image"}, "media_type": FORM}, "an unreadable upload"),
    Explicit(400, {"body": {"prompt": "a lighthouse", "num_inference_steps": 3, "image": png_bytes()}, "media_type": FORM}, "steps past the runner's limit"),
    Explicit(422, {"body": {"prompt": "a lighthouse"}, "media_type": FORM}, "no image"),
    Explicit(422, {"body": {"prompt": "a lighthouse", "strength": 0, "image": png_bytes()}, "media_type": FORM}, "strength 0"),
]


def assert_clean(reports: list[RouteReport], route: str, runner: RunnerProcess, statuses: set[int]) -> None:
    summary = "\n".join(r.line() for r in reports)
    failures = [f for r in reports for f in r.failures]
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:20]) + "\n" + summary
    main = [r for r in reports if r.label.endswith(route)]
    assert {r.mode for r in main} == {"explicit", "positive", "negative"}, summary
    assert all(r.cases >= 20 for r in main if r.mode != "explicit"), summary  # hypothesis really generated them
    explicit = next(r for r in main if r.mode == "explicit")
    assert set(explicit.statuses) == statuses, summary  # each got its own status (or it is a failure above)
    # Still alive, ready, and serving a good request.
    assert runner.alive()
    good = runner.good_request()
    assert good.status_code == 200, good.text
    assert good.json()["images"][0]["url"].startswith("data:image/png;base64,")
    assert "Traceback" not in runner.output()


def test_fuzz_text_to_image(t2i_proc: RunnerProcess) -> None:
    reports = fuzz_server(t2i_proc.url, max_examples=30, examples_for=JOB_ROUTES, explicit={"/text-to-image": TEXT_TO_IMAGE})
    assert_clean(reports, "/text-to-image", t2i_proc, {200, 202, 400, 422})


def test_fuzz_image_to_image_multipart(i2i_proc: RunnerProcess) -> None:
    reports = fuzz_server(i2i_proc.url, max_examples=30, examples_for=JOB_ROUTES, explicit={"/image-to-image": IMAGE_TO_IMAGE})
    assert_clean(reports, "/image-to-image", i2i_proc, {200, 400, 422})
