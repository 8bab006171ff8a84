"""The one place that writes children: create when missing, re-apply when drifted.

Drift is judged two ways: the spec-hash annotation (the operator's desired state
changed) and a subset comparison (someone edited a field the operator owns; fields
the API server or other controllers add are ignored). A drifted object is
server-side applied with the operator's field manager, which also removes fields the
operator set before and no longer wants, and touches nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from . import names
from .kube import ApiError, Kube, path_of

Outcome = Literal["created", "updated", "unchanged"]


def is_subset(desired: Any, current: Any) -> bool:
    """Whether ``current`` holds every value of ``desired`` (extra keys allowed, lists same length)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(k in current and is_subset(v, current[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(current, list) and len(desired) == len(current) and all(is_subset(d, c) for d, c in zip(desired, current, strict=False))
    if isinstance(desired, bool) or isinstance(current, bool):
        return desired is current
    if (isinstance(desired, int | float) and isinstance(current, str)) or (isinstance(desired, str) and isinstance(current, int | float)):
        return str(desired) == str(current)  # quantities: 1 == "1"
    return bool(desired == current)


def drifted(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    want = (desired.get("metadata") or {}).get("annotations", {}).get(names.SPEC_HASH_ANNOTATION)
    have = ((current.get("metadata") or {}).get("annotations") or {}).get(names.SPEC_HASH_ANNOTATION)
    if want != have:
        return True
    ours = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(ours, current)


async def apply(kube: Kube, desired: Mapping[str, Any]) -> Outcome:
    current = await kube.get(path_of(desired))
    if current is None:
        try:
            await kube.create(desired)
            return "created"
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Created meanwhile (e.g. an earlier attempt whose answer was lost): compare it instead.
            current = await kube.get(path_of(desired))
            if current is None:
                raise
    if not drifted(desired, current):
        return "unchanged"
    await kube.apply(desired)
    return "updated"
