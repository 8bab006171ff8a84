"""LoRA adapters: loaded once at start-up as named adapters, switched per request.

Every adapter declared in spec.loras is loaded from the cache (through the
fetcher's marker: ``snapshots.locate``) with diffusers' ``load_lora_weights``
under its name, then deactivated. Before each pipeline call the worker thread
activates exactly the request's adapters and weights (``set_adapters``); a
request without any runs with adapters disabled, never fused, so it generates
what the model alone generates. Requests with different adapter sets never
share a call (``TaskPipeline.job_key``). peft does the layer work.
"""

from __future__ import annotations

import logging
from typing import Any

from kubediffusers.runner.errors import ModelUnavailable, one_line
from kubediffusers.runner.loras import Picked, pick_adapters
from kubediffusers.runner.settings import RunnerSettings
from kubediffusers.runner.snapshots import locate

log = logging.getLogger(__name__)


class Adapters:
    def __init__(self, pipe: Any, settings: RunnerSettings) -> None:
        self.pipe = pipe
        self.declared = tuple(settings.loras)
        self._active: Picked = ()

    @classmethod
    def load(cls, pipe: Any, settings: RunnerSettings) -> Adapters | None:
        """Load every declared adapter (None when none is declared); ModelUnavailable with the reason otherwise."""
        if not settings.loras:
            return None
        if not hasattr(pipe, "load_lora_weights"):
            raise ModelUnavailable(f"{type(pipe).__name__} ({settings.model_id}) takes no LoRA adapters; remove spec.loras")
        for lora in settings.loras:
            snapshot = locate(settings.model_dir, lora.id, lora.revision, what="LoRA adapter").path
            if lora.weight_name is not None and not (snapshot / lora.weight_name).is_file():
                raise ModelUnavailable(f"LoRA adapter {lora.name}: {lora.id}@{lora.revision} has no {lora.weight_name}")
            try:
                pipe.load_lora_weights(snapshot, weight_name=lora.weight_name, adapter_name=lora.name, use_safetensors=True, local_files_only=True)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise ModelUnavailable(f"LoRA adapter {lora.name} ({lora.id}) does not fit {settings.model_id}: {one_line(exc, 300)}") from None
            log.info("LoRA adapter %s loaded from %s", lora.name, lora.id)
        adapters = cls(pipe, settings)
        pipe.disable_lora()
        return adapters

    def pick(self, params: Any) -> Picked:
        return pick_adapters(getattr(params, "loras", ""), self.declared)

    def activate(self, picked: Picked) -> None:
        """Make exactly these adapters (and weights) active for the next call; none: disabled."""
        if picked == self._active:
            return
        if picked:
            self.pipe.enable_lora()
            self.pipe.set_adapters([name for name, _ in picked], [weight for _, weight in picked])
        else:
            self.pipe.disable_lora()
        self._active = picked
