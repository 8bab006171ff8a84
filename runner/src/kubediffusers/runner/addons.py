"""The add-on repositories a runner needs besides its model, for the fetcher and the runner alike.

An add-on is a Hugging Face repository of its own: the tiny VAE
(``tiny_vae_id``), each LoRA adapter repository (``loras``) and the safety
checker (``safety_checker_*``). The fetch init container fetches each one after
the model (``fetch.cli``), writing a completion marker per repository, and the
runner finds each one through that marker (``snapshots.locate``): both read
this one list, so what is loaded is what was fetched. Pure pydantic and
standard library: the fetcher imports it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubediffusers.runner.settings import LoraAdapter


@dataclass(frozen=True)
class AddOn:
    kind: str  # for messages: "tiny VAE", "LoRA adapter", "safety checker"
    repo_id: str
    revision: str = "main"
    # LoRA repositories often hold several adapters: only the declared files are
    # fetched. None: the fetcher's default selection (configs and root safetensors).
    files: tuple[str, ...] | None = None


def add_ons(
    *,
    tiny_vae_id: str | None,
    loras: Sequence[LoraAdapter],
    safety_checker_enabled: bool,
    safety_checker_model_id: str,
) -> list[AddOn]:
    """Every add-on repository, once each (adapters of one repository and revision share a fetch)."""
    result: list[AddOn] = []
    if tiny_vae_id:
        result.append(AddOn("tiny VAE", tiny_vae_id))
    groups: dict[tuple[str, str], list[LoraAdapter]] = {}
    for lora in loras:
        groups.setdefault((lora.id, lora.revision), []).append(lora)
    for (repo_id, revision), members in groups.items():
        named = [m.weight_name for m in members if m.weight_name]
        files = tuple(sorted(set(named))) if len(named) == len(members) else None
        result.append(AddOn("LoRA adapter", repo_id, revision, files))
    if safety_checker_enabled:
        result.append(AddOn("safety checker", safety_checker_model_id))
    return result
