"""What may change on an existing model-cache claim, checked before writing.

A PersistentVolumeClaim's spec is immutable after creation except
``resources.requests.storage``, which may only grow, and only on a bound claim whose
StorageClass allows expansion. Changes that cannot work are caught here, with a
message that says what to do; the claim is then left as it is while the Deployment
and Service are still brought up to date.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .checks import Problem
from .normalize import canonical_quantity

RECREATE = "or delete the pipeline and create it again (with storage.deletePolicy Delete the cached model is deleted with it)"


def size_of(quantity: Any) -> Decimal:
    text = canonical_quantity(quantity)
    units = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
    for suffix, power in units.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * 1024**power
    decimal = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
    if text[-1:] in decimal:
        return Decimal(text[:-1]).scaleb(decimal[text[-1]])
    return Decimal(text)


def _requested(claim: Mapping[str, Any]) -> Any:
    return (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def claim_change_problems(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[Problem]:
    """Why ``desired`` cannot be applied over ``live`` (empty: it can be tried)."""
    want, have = desired.get("spec") or {}, live.get("spec") or {}
    name = live["metadata"]["name"]
    problems = []
    if sorted(want.get("accessModes") or []) != sorted(have.get("accessModes") or []):
        problems.append(
            f"spec.storage.accessModes {want.get('accessModes')} differs from claim {name}'s {have.get('accessModes')}, and a claim's access modes "
            f"cannot change: revert spec.storage.accessModes, {RECREATE}"
        )
    if "storageClassName" in want and want["storageClassName"] != have.get("storageClassName"):
        problems.append(
            f"spec.storage.storageClassName {want['storageClassName']!r} differs from claim {name}'s {have.get('storageClassName')!r}, and a claim's class "
            f"cannot change: revert spec.storage.storageClassName, {RECREATE}"
        )
    wanted, current = _requested(desired), _requested(live)
    if current is not None and size_of(wanted) < size_of(current):
        problems.append(
            f"spec.storage.size {wanted} is smaller than claim {name}'s {canonical_quantity(current)}, and a claim cannot shrink: "
            f"set spec.storage.size to at least {canonical_quantity(current)}, {RECREATE}"
        )
    return [Problem("StorageChangeRejected", message, blocking=False) for message in problems]


def resize_requested(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    current = _requested(live)
    return current is not None and size_of(_requested(desired)) != size_of(current)


def rejected_resize(live: Mapping[str, Any], desired: Mapping[str, Any], message: str) -> Problem:
    cls = (live.get("spec") or {}).get("storageClassName")
    return Problem(
        "StorageResizeRejected",
        f"growing claim {live['metadata']['name']} to {_requested(desired)} was refused ({message}): the claim must be bound and its StorageClass "
        f"{cls!r} must have allowVolumeExpansion: true; enable it, or revert spec.storage.size to {canonical_quantity(_requested(live))}, {RECREATE}",
        blocking=False,
    )


def resizing(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> str | None:
    """A message while the claim's capacity is below the requested size (after an accepted increase)."""
    if live is None:
        return None
    capacity = ((live.get("status") or {}).get("capacity") or {}).get("storage")
    if capacity is None or (live.get("status") or {}).get("phase") != "Bound":
        return None
    if size_of(capacity) < size_of(_requested(desired)):
        return f"claim {live['metadata']['name']} is being resized from {canonical_quantity(capacity)} to {canonical_quantity(_requested(desired))}"
    return None
