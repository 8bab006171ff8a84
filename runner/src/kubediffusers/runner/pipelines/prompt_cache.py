"""A bounded LRU of prompt embeddings, so a repeated prompt skips the text encoders.

The text encoders run eagerly on every diffusers call (launch-bound: several
milliseconds on a GPU for CLIP-H, more for SDXL's two encoders), yet serving
traffic repeats prompts. Embeddings are kept per (prompt, negative prompt,
guidance on/off, the encoders' identity): what diffusers' ``encode_prompt``
depends on for the SD and SDXL families, the ones handled here. Other
pipelines get their prompts as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch

# What each family's encode_prompt returns, in the order of its call arguments.
SD_KEYS = ("prompt_embeds", "negative_prompt_embeds")
SDXL_KEYS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")


def family(pipe: Any) -> tuple[str, ...] | None:
    """The embedding arguments of the pipeline's family, or None when it is not handled."""
    name = type(pipe).__name__
    if not hasattr(pipe, "encode_prompt") or "Inpaint" in name or "Upscale" in name:
        return None
    if name.startswith("StableDiffusionXL"):
        return SDXL_KEYS
    if name.startswith("StableDiffusion") and not name.startswith("StableDiffusion3"):
        return SD_KEYS
    return None


class PromptCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[torch.Tensor | None, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def embeddings(self, pipe: Any, keys: tuple[str, ...], prompt: str, negative: str, guided: bool) -> tuple[torch.Tensor | None, ...]:
        encoders = tuple(id(getattr(pipe, n, None)) for n in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
        key = (prompt, negative, guided, encoders)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        device = getattr(pipe, "_execution_device", None) or pipe.device
        with torch.inference_mode():
            if keys is SDXL_KEYS:
                found = tuple(pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guided, negative_prompt=negative))
            else:
                found = tuple(pipe.encode_prompt(prompt, device, 1, guided, negative))
        self._entries[key] = found
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return found

    def replace_prompts(self, pipe: Any, kwargs: dict[str, Any], guided: bool) -> None:
        """Swap ``prompt``/``negative_prompt`` lists in diffusers call arguments for cached embeddings."""
        keys = family(pipe)
        if keys is None or self.size <= 0 or not isinstance(kwargs.get("prompt"), list):
            return
        prompts = kwargs.pop("prompt")
        negatives = kwargs.pop("negative_prompt", None) or [""] * len(prompts)
        parts = [self.embeddings(pipe, keys, p, n, guided) for p, n in zip(prompts, negatives, strict=True)]
        for index, name in enumerate(keys):
            tensors = [part[index] for part in parts]
            if all(t is not None for t in tensors):
                kwargs[name] = torch.cat(tensors)  # type: ignore[arg-type]
