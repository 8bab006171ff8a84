"""Fixtures for the operator tests (no cluster: builders, KMock, CLI)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

import kubediffusers.operator.handlers  # noqa: F401  (registers the handlers with kopf)
from kubediffusers.operator.runtime import Runtime
from tests.operator.fakecluster import FakeCluster, register_resources
from tests.operator.helpers import CRD_PATH, NS, running_operator, to_jsonschema


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def crd_validator(crd: dict[str, Any]) -> Any:
    import jsonschema

    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(to_jsonschema(schema))


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeCluster]:
    async with FakeCluster() as fake, kmock.Server(fake):
        register_resources(fake)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(fake.url).rstrip("/")}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": NS}}],
            "current-context": "kmock",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield fake


@pytest.fixture
async def operator(cluster: FakeCluster) -> AsyncIterator[Runtime]:
    async with running_operator() as runtime:
        yield runtime
