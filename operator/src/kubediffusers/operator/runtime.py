"""The operator's moving parts: credentials, the API client, one loop per pipeline.

Each pipeline gets a kopf daemon that reconciles it, then sleeps until poked (by an
event on the pipeline or on one of its children) or until the resync interval ends.
One loop per pipeline means its reconciliations never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from .kube import ApiError, Kube
from .metrics import OperatorMetrics
from .names import MANAGED_BY_LABEL, MANAGER
from .reconcile import Result, reconcile
from .settings import OperatorSettings
from .spec import GROUP

Key = tuple[str, str]
# (group, plural) of the children the handlers watch.
CHILD_RESOURCES = frozenset({("apps", "deployments"), ("", "services"), ("", "persistentvolumeclaims"), ("networking.k8s.io", "networkpolicies"), ("", "pods")})


def _is_child(resource: kopf.Resource) -> bool:
    return (resource.group, resource.plural) in CHILD_RESOURCES


FINALIZER = f"{GROUP}/finalizer"
WARNING_PHASES = frozenset({"Degraded", "Failed"})


class Runtime:
    def __init__(self, settings: OperatorSettings | None = None) -> None:
        self.settings = settings or OperatorSettings()
        self.connection: kopf.ConnectionInfo | None = None
        self._kube: Kube | None = None
        self._triggers: dict[Key, asyncio.Event] = {}
        self._last_status: dict[Key, dict[str, Any]] = {}
        self.metrics = OperatorMetrics()

    # ---- kopf activities

    def configure(self, settings: kopf.OperatorSettings) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
        settings.peering.name = self.settings.peering_name
        settings.peering.standalone = self.settings.standalone
        settings.peering.mandatory = not self.settings.standalone
        settings.posting.level = logging.INFO  # only kopf.event() calls: phase transitions
        settings.networking.request_timeout = 60
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.metrics_port)
        # Children are watched cluster-wide: let the API server filter them by label (kopf's
        # labels= on the handlers alone filters client-side, after every pod of the cluster
        # was sent) and page the initial listings, so a big cluster does not starve the operator.
        settings.watching.label_selectors[_is_child] = f"{MANAGED_BY_LABEL}={MANAGER}"
        settings.watching.chunk_size = self.settings.list_chunk_size

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = None
        with contextlib.suppress(kopf.LoginError, ImportError):
            info = kopf.login_via_client(**kwargs)  # in-cluster, kubeconfig incl. exec plugins
        info = info or kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        self.connection = info
        return info

    async def close(self) -> None:
        self.metrics.close()
        if self._kube is not None:
            await self._kube.close()
            self._kube = None

    def kube(self) -> Kube:
        if self.connection is None:
            raise ApiError(0, "NotLoggedIn", "no Kubernetes credentials yet")
        if self._kube is None or self._kube.info is not self.connection:
            # Credentials were refreshed (kopf re-logs in on 401): start a new session.
            if self._kube is not None:
                asyncio.get_running_loop().create_task(self._kube.close())
            self._kube = Kube(self.connection)
        return self._kube

    # ---- per pipeline

    def poke(self, namespace: str | None, name: str | None) -> None:
        """Something about the pipeline changed: reconcile it soon."""
        if namespace and name and (trigger := self._triggers.get((namespace, name))) is not None:
            trigger.set()

    async def serve(self, body: Mapping[str, Any], stopped: kopf.DaemonStopped, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """The pipeline's loop, until kopf stops it (deletion or operator exit)."""
        key: Key = (body["metadata"]["namespace"], body["metadata"]["name"])
        trigger = self._triggers[key] = asyncio.Event()
        failures = 0
        try:
            while not stopped:
                trigger.clear()
                started = time.monotonic()
                try:
                    result = await reconcile(body, self.kube(), self.settings, logger, self._last_status.get(key) or body.get("status"))
                except ApiError as exc:
                    self.metrics.failed("api", time.monotonic() - started)
                    failures += 1
                    delay = min(self.settings.retry_seconds * 2 ** min(failures - 1, 6), self.settings.resync_seconds)
                    logger.warning(f"Kubernetes API trouble, retrying in {delay:.1f}s: {exc}")
                except Exception:  # a bug must not kill the loop: report, back off, retry
                    self.metrics.failed("internal", time.monotonic() - started)
                    failures += 1
                    delay = min(self.settings.retry_seconds * 2 ** min(failures - 1, 6), self.settings.resync_seconds)
                    logger.exception(f"reconciliation failed, retrying in {delay:.1f}s")
                else:
                    self.metrics.reconciled(time.monotonic() - started)
                    failures = 0
                    delay = self.settings.resync_seconds
                    if result is not None:  # None: gone or being deleted; kopf stops this loop
                        self.metrics.phase(key, result.phase)
                        self._announce(body, result, logger)
                await _wait_any(trigger, stopped, delay)
        finally:
            if self._triggers.get(key) is trigger:
                del self._triggers[key]
                self.metrics.phase(key, None)
            self._last_status.pop(key, None)

    def _announce(self, body: Mapping[str, Any], result: Result, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if result.written:
            self._last_status[key] = result.status
        if result.phase != result.previous_phase:
            level = logging.WARNING if result.phase in WARNING_PHASES else logging.INFO
            logger.log(level, f"phase {result.previous_phase or '-'} -> {result.phase}: {result.message}")
            kind = "Warning" if result.phase in WARNING_PHASES else "Normal"
            kopf.event(
                dict(body),  # type: ignore[arg-type]  # kopf reads only the metadata; a plain dict does
                type=kind,
                reason=result.phase,
                message=result.message or result.phase,
            )


async def _wait_any(trigger: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    async def _stopped() -> None:
        await stopped.wait()

    tasks = {asyncio.ensure_future(trigger.wait()), asyncio.ensure_future(_stopped())}
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def runtime_of(memo: Any) -> Runtime:
    """The runtime in kopf's memo, created from the environment when none was given."""
    if getattr(memo, "runtime", None) is None:
        memo.runtime = Runtime()
    runtime: Runtime = memo.runtime
    return runtime
