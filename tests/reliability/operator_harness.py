"""The real kopf operator in its own thread and loop against an emulated API
server (as tests/operator/test_operator_kopf.py runs it), startable and stoppable
repeatedly: an operator restart is a stop and a fresh start."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml

import kubediffusers.operator.handlers  # noqa: F401  (registers the handlers with kopf)
import kubediffusers.operator.runtime as runtime_module
from kubediffusers.operator.kube import Kube
from kubediffusers.operator.runtime import Runtime
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.fakecluster import CRD_RESOURCE, register_resources
from tests.operator.helpers import eventually as shared_eventually
from tests.reliability.faultycluster import TOKEN, FaultyCluster

NS = "storm"
GROUP_PATH = "/apis/kubediffusers.io/v1alpha1"
PIPELINES = f"{GROUP_PATH}/namespaces/{NS}/inferencepipelines"
CHILD_RESOURCES = {"apps/v1/deployments": "Deployment", "v1/services": "Service", "v1/persistentvolumeclaims": "PersistentVolumeClaim"}


@contextlib.asynccontextmanager
async def faulty_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int = 0) -> AsyncIterator[FaultyCluster]:
    async with FaultyCluster(seed=seed) as fake, kmock.Server(fake):
        register_resources(fake)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(fake.url).rstrip("/")}}],
            "users": [{"name": "operator", "user": {"token": TOKEN}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator", "namespace": NS}}],
            "current-context": "kmock",
        }
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(path))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        # The operator's own client gives up after 1 s (30 s in production), so injected hangs are timeouts.
        monkeypatch.setattr(runtime_module, "Kube", partial(Kube, timeout=1.0))
        yield fake


class OperatorThread:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.crashed: BaseException | None = None
        self.starts = 0

    def _run(self, ready: threading.Event) -> None:
        kopf_settings = kopf.OperatorSettings()
        kopf_settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1.0]  # kopf's own retries, shortened
        kopf_settings.watching.reconnect_backoff = 0.1
        coro = kopf.operator(
            clusterwide=True, memo=kopf.Memo(runtime=Runtime(self.settings)), stop_flag=self.stop_flag, ready_flag=ready, settings=kopf_settings
        )
        try:
            asyncio.run(coro)
        except BaseException as exc:
            self.crashed = exc

    async def start(self, timeout: float = 30.0) -> None:
        ready = threading.Event()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name=f"kopf-operator-{self.starts}", daemon=True)
        self.starts += 1
        self.thread.start()
        assert await asyncio.to_thread(ready.wait, timeout), "the operator did not start"

    async def stop(self, timeout: float = 60.0) -> None:
        assert self.thread is not None
        assert self.thread.is_alive(), f"the operator exited on its own: {self.crashed!r}"
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, timeout)
        assert not self.thread.is_alive(), "the operator did not stop"

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


async def call(cluster: FaultyCluster, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
    content_type = "application/json" if method == "POST" else "application/merge-patch+json"
    async with cluster.request(method, path, json=body, headers={"Content-Type": content_type}) as response:
        assert response.status < 400 or response.status in ok, (method, path, response.status, await response.text())
        return await response.json() if response.status < 400 else None


def live(cluster: FaultyCluster, resource: str) -> dict[str, dict[str, Any]]:
    return {name: copy.deepcopy(o.raw) for (res, ns, name), o in list(cluster.objects.items()) if res == resource and ns == NS and not o.deleted}


def pipelines(cluster: FaultyCluster) -> dict[str, dict[str, Any]]:
    return live(cluster, CRD_RESOURCE)


async def eventually(check: Callable[[], Any], timeout: float, what: Callable[[], str] | str = "") -> Any:
    # Storms are slower to converge: poll less often than the operator tests do.
    return await shared_eventually(check, timeout, what, poll=0.2)
