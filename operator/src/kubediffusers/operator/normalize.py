"""Desired objects in the form the API server returns them, so comparing them with live ones is fair.

The API server canonicalises quantities (``1024Mi`` -> ``1Gi``, ``1000m`` -> ``1``,
``0.5Gi`` -> ``512Mi``) and serialises its Go types with ``omitempty``: an env var
whose value is ``""`` comes back without ``value``, empty lists and empty
string maps are dropped. Comparing the builders' output as is would see drift that
is not there and re-apply on every resync.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal
from typing import Any

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
# Maps of quantities (ResourceRequirements.limits/requests, ResourceQuota hard) and single quantities.
_QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "hard"})
_QUANTITY_FIELDS = frozenset({"sizeLimit"})
# String maps whose empty form the API server drops (empty string values inside them are kept).
_STRING_MAPS = frozenset({"labels", "annotations", "nodeSelector", "matchLabels", "selector"})


def canonical_quantity(raw: object) -> str:
    """The form apimachinery's resource.Quantity prints (raises ValueError for a non-quantity)."""
    text = str(raw).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a quantity: {raw!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY_SUFFIXES:
        value = number * 1024 ** _BINARY_SUFFIXES[suffix]
    elif suffix[:1] in ("e", "E"):
        value = number.scaleb(int(suffix[1:]))
    else:
        value = number.scaleb(_DECIMAL_SUFFIXES[suffix])
    binary = suffix in _BINARY_SUFFIXES and not (-1024 < value < 1024) and value == value.to_integral_value()
    if binary:
        for power in range(6, -1, -1):
            if value % (1024**power) == 0:
                return f"{int(value / 1024**power)}{'' if power == 0 else list(_BINARY_SUFFIXES)[power - 1]}"
    nanos = (value * 10**9).to_integral_value(rounding=ROUND_CEILING)
    if nanos == 0:
        return "0"
    exponent = 18
    while exponent > -9 and nanos % (10 ** (exponent + 9)) != 0:
        exponent -= 3
    mantissa = int(nanos / 10 ** (exponent + 9))
    if suffix[:1] in ("e", "E"):
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{next(s for s, e in _DECIMAL_SUFFIXES.items() if e == exponent)}"


def as_served(value: Any, key: str | None = None) -> Any:
    """``value`` as the API server would return it."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if key in _QUANTITY_MAPS and not isinstance(v, dict | list):
                out[k] = canonical_quantity(v)
                continue
            if k in _QUANTITY_FIELDS and not isinstance(v, dict | list):
                out[k] = canonical_quantity(v)
                continue
            v = as_served(v, k)
            if v is None or (v == "" and key not in _STRING_MAPS) or v == [] or (v == {} and k in _STRING_MAPS | _QUANTITY_MAPS):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [as_served(item, key) for item in value]
    return value
