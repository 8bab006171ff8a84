"""Fixtures for the reliability tests: real runner processes on the tiny models.

One text-to-image and one image-to-image runner serve the whole package (starting
a process costs seconds of torch import and model load on these 2-core machines);
both start at once. Their limits make every accepted request cheap (at most 2
steps, 64x64, one image), and the text-to-image queue is small so overload is
quick to reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.procs import QUEUE, RunnerProcess


@pytest.fixture(scope="session")
def reliability_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability-models")


@pytest.fixture(scope="package")  # stopped when the package is done, not idling through later packages
def runners(reliability_models: Path) -> Iterator[dict[str, RunnerProcess]]:
    procs = {
        "text-to-image": RunnerProcess(reliability_models, "text-to-image", env={"KUBEDIFFUSERS_MAX_QUEUE_SIZE": str(QUEUE)}),
        "image-to-image": RunnerProcess(reliability_models, "image-to-image", env={"KUBEDIFFUSERS_MAX_UPLOAD_BYTES": str(256 * 1024)}),
    }
    started: list[RunnerProcess] = []
    try:
        for proc in procs.values():
            proc.start()
            started.append(proc)
        for proc in procs.values():
            proc.wait_ready()
        yield procs
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="package")
def t2i_proc(runners: dict[str, RunnerProcess]) -> RunnerProcess:
    return runners["text-to-image"]


@pytest.fixture(scope="package")
def i2i_proc(runners: dict[str, RunnerProcess]) -> RunnerProcess:
    return runners["image-to-image"]
