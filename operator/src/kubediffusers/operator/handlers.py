"""kopf handlers: one line each, the work is in ``runtime.py`` and ``reconcile.py``.

Run with ``kubediffusers operator`` (or ``kopf run -m kubediffusers.operator.handlers``).
"""

from __future__ import annotations

from typing import Any

import kopf

from .names import MANAGED_BY_LABEL, MANAGER, PIPELINE_LABEL
from .runtime import runtime_of
from .spec import GROUP, PLURAL, VERSION

OURS = {MANAGED_BY_LABEL: MANAGER}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime_of(memo).configure(settings)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    return runtime_of(memo).login(**kwargs)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await runtime_of(memo).close()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def pipeline(body: kopf.Body, stopped: kopf.DaemonStopped, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    await runtime_of(memo).serve(body, stopped, logger)


@kopf.on.event(GROUP, VERSION, PLURAL)
def pipeline_changed(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime_of(memo).poke(namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("v1", "services", labels=OURS)
@kopf.on.event("v1", "persistentvolumeclaims", labels=OURS)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=OURS)
@kopf.on.event("v1", "pods", labels=OURS)
# KEDA's objects: watched only where KEDA is installed (kopf waits for their CRDs otherwise).
@kopf.on.event("keda.sh", "v1alpha1", "scaledobjects", labels=OURS)
@kopf.on.event("http.keda.sh", "v1alpha1", "httpscaledobjects", labels=OURS)
def child_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    runtime_of(memo).poke(namespace, labels.get(PIPELINE_LABEL))
