"""The per-request ``loras`` field, livepeer ai-runner's format: a JSON object
``{"<repo id or adapter name>": weight}`` as a string, at most four adapters.

Parsing and picking are pure: a request naming an adapter the runner did not
declare (spec.loras) is a 400 listing the declared ones, before anything is
queued. The adapters themselves are loaded at start-up (``adapters``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from kubediffusers.runner.errors import InvalidInput
from kubediffusers.runner.settings import MAX_LORA_SCALE, LoraAdapter

MAX_LORAS = 4  # livepeer's LORA_LIMIT: more slows every step of the request

# What a request's adapters resolve to: (adapter name, weight), sorted, zero weights left out.
Picked = tuple[tuple[str, float], ...]


def parse_loras(text: str) -> dict[str, float | None]:
    """The request's ``loras``: adapter (repo id or name) -> weight (None: the declared scale)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidInput(f'loras: unable to parse {text[:200]!r} as JSON; send an object such as {{"org/adapter": 0.8}}') from None
    if not isinstance(value, dict):
        raise InvalidInput('loras must be a JSON object {"<repo id or adapter name>": weight}')
    if len(value) > MAX_LORAS:
        raise InvalidInput(f"loras: at most {MAX_LORAS} adapters per request, got {len(value)}")
    weights: dict[str, float | None] = {}
    for key, weight in value.items():
        if weight is not None and (
            isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or not 0 <= weight <= MAX_LORA_SCALE
        ):
            raise InvalidInput(f"loras: the weight of {key!r} must be a number from 0 to {MAX_LORA_SCALE:g} (or null for its declared scale), got {weight!r}")
        weights[key] = None if weight is None else float(weight)
    return weights


def pick_adapters(text: str, declared: Sequence[LoraAdapter]) -> Picked:
    """The declared adapters a request's ``loras`` names, with their weights; 400 for any other."""
    requested = parse_loras(text)
    if not requested:
        return ()
    by_name = {lora.name: lora for lora in declared}
    by_id: dict[str, list[LoraAdapter]] = {}
    for adapter in declared:
        by_id.setdefault(adapter.id, []).append(adapter)
    picked: dict[str, float] = {}
    for key, weight in requested.items():
        lora: LoraAdapter | None = by_name.get(key)
        if lora is None:
            same_repo = by_id.get(key, [])
            if len(same_repo) > 1:
                raise InvalidInput(f"loras: {key!r} holds several declared adapters ({', '.join(m.name for m in same_repo)}); name one of them")
            lora = same_repo[0] if same_repo else None
        if lora is None:
            raise InvalidInput(f"loras: {key!r} is not a LoRA adapter of this runner; {_declared(declared)}")
        if lora.name in picked:
            raise InvalidInput(f"loras: adapter {lora.name!r} is named twice (by name and by repository id)")
        picked[lora.name] = lora.scale if weight is None else weight
    # A zero weight changes nothing: such a request is served (and batched) as one without adapters.
    return tuple(sorted((name, weight) for name, weight in picked.items() if weight > 0))


def _declared(declared: Sequence[LoraAdapter]) -> str:
    if not declared:
        return "it declares none (spec.loras)"
    return "declared: " + ", ".join(f"{lora.name} ({lora.id})" for lora in declared)
