"""A request's ``loras`` field: livepeer ai-runner's format, parsed and checked.

livepeer sends ``loras`` as a JSON string, an object from a Hugging Face
repository id to a weight (``{"latent-consistency/lcm-lora-sdxl": 1.0}``);
empty means none. This module only parses and checks the value; loading and
applying adapters is the LoRA work's (issue 13), which passes the adapters the
runner declares as ``declared``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection

from kubediffusers.runner.errors import InvalidInput

MAX_LORAS = 4  # adapters one request may combine
MAX_WEIGHT = 100.0
# A Hugging Face repository id (owner/name or name), as the runner's model id.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

DESCRIPTION = (
    "LoRA adapters and their weights, as livepeer ai-runner sends them: a JSON object from a repository id to a weight, "
    f'e.g. {{"latent-consistency/lcm-lora-sdxl": 1.0}}; at most {MAX_LORAS}, each one the runner declares. Empty: none.'
)


def parse(value: str) -> dict[str, float]:
    """The adapters a ``loras`` value names, with their weights; InvalidInput when malformed."""
    if not value.strip():
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise InvalidInput(f'loras: unable to parse {value[:200]!r} as JSON; send an object such as {{"owner/lora": 1.0}}') from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f"loras must be a JSON object from repository id to weight, got {type(parsed).__name__}")
    if len(parsed) > MAX_LORAS:
        raise InvalidInput(f"loras names {len(parsed)} adapters; at most {MAX_LORAS} may be combined")
    adapters: dict[str, float] = {}
    for repo, weight in parsed.items():
        if not REPO_ID.match(repo) or len(repo) > 200:
            raise InvalidInput(f"loras: {repo[:200]!r} is not a repository id")
        # bool is an int to Python, not a weight to anyone.
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or not 0 <= weight <= MAX_WEIGHT:
            raise InvalidInput(f"loras: the weight of {repo} must be a number from 0 to {MAX_WEIGHT:g}, got {weight!r}")
        adapters[repo] = float(weight)
    return adapters


def check(adapters: dict[str, float], declared: Collection[str]) -> None:
    """Every named adapter must be one the runner declares (and so has fetched)."""
    unknown = sorted(set(adapters) - set(declared))
    if not unknown:
        return
    if not declared:
        raise InvalidInput(f"loras names {', '.join(unknown)}, but no adapters are declared for this runner")
    raise InvalidInput(f"loras names {', '.join(unknown)}, not declared for this runner; declared: {', '.join(sorted(declared))}")
