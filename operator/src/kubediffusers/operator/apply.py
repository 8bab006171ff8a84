"""The one place that writes children: server-side apply, from the first write on.

Every child is created and updated by a server-side apply patch under the
operator's field manager (an apply patch creates a missing object). The API server
records the fields each apply sets under the (manager, ``Apply``) entry of
``metadata.managedFields``; an apply that no longer sets a field removes it, unless
another manager also owns it. A POST, by contrast, is recorded as an ``Update``
operation of the same manager name, a second owner that an apply can never take
fields from: removed env vars, tolerations, old Service ports and owner references
would stay for ever. Children created that way by earlier versions are migrated once,
as kubectl's client-to-server-side migration (``csaupgrade``) does: the fields of the
operator's ``Update`` entry are moved into its ``Apply`` entry, then it applies.

Drift is judged two ways: the spec-hash annotation (the operator's desired state
changed) and a subset comparison of the desired object, in the form the API server
returns it (``normalize.py``: canonical quantities, no empty strings or lists), with
the live one; fields the API server or other controllers add are ignored. So a
converged child is left alone and a resync sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from . import names
from .kube import ApiError, Kube, path_of
from .normalize import as_served

Outcome = Literal["created", "updated", "unchanged"]


def is_subset(desired: Any, current: Any) -> bool:
    """Whether ``current`` holds every value of ``desired`` (extra keys allowed, lists same length)."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(k in current and is_subset(v, current[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(current, list) and len(desired) == len(current) and all(is_subset(d, c) for d, c in zip(desired, current, strict=False))
    if isinstance(desired, bool) or isinstance(current, bool):
        return desired is current
    return bool(desired == current)


def drifted(desired: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    want = (desired.get("metadata") or {}).get("annotations", {}).get(names.SPEC_HASH_ANNOTATION)
    have = ((current.get("metadata") or {}).get("annotations") or {}).get(names.SPEC_HASH_ANNOTATION)
    if want != have:
        return True
    ours = {k: v for k, v in as_served(desired).items() if k not in ("apiVersion", "kind")}
    return not is_subset(ours, current)


def upgraded_managed_fields(current: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """managedFields with the operator's Update entry folded into its Apply entry; None when there is none.

    As client-go's csaupgrade.UpgradeManagedFields: the union of both field sets
    becomes the Apply entry, the Update entry goes.
    """
    entries = list((current.get("metadata") or {}).get("managedFields") or [])
    is_update = [e.get("manager") == names.MANAGER and e.get("operation") == "Update" and not e.get("subresource") for e in entries]
    if not any(is_update):
        return None
    updates = [e for e, u in zip(entries, is_update, strict=True) if u]
    kept = [e for e, u in zip(entries, is_update, strict=True) if not u]
    apply_entry = next((e for e in kept if e.get("manager") == names.MANAGER and e.get("operation") == "Apply" and not e.get("subresource")), None)
    fields: dict[str, Any] = dict((apply_entry or {}).get("fieldsV1") or {})
    for entry in updates:
        fields = _union(fields, entry.get("fieldsV1") or {})
    merged = {
        **(apply_entry or updates[0]),
        "operation": "Apply",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    return [merged if e is apply_entry else e for e in kept] if apply_entry is not None else [*kept, merged]


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _union(out[key], value) if key in out else value
    return out


_UNREAD: Any = object()


async def apply(kube: Kube, desired: Mapping[str, Any], current: Mapping[str, Any] | None = _UNREAD) -> Outcome:
    """Apply ``desired`` unless the live object (``current``, read here unless given) already matches it."""
    if current is _UNREAD:
        current = await kube.get(path_of(desired))
    if current is not None:
        upgraded = upgraded_managed_fields(current)
        if upgraded is not None:
            try:
                await kube.replace_managed_fields(path_of(desired), current, upgraded)
            except ApiError as exc:
                if exc.status == 422:  # the resourceVersion test failed: changed meanwhile, read it again
                    raise ApiError(409, "Conflict", exc.message) from None
                raise
        elif not drifted(desired, current):
            return "unchanged"
    await kube.apply(desired)
    return "created" if current is None else "updated"
