"""UNet feature reuse between denoising steps (the DeepCache method), written here.

DeepCache 0.1.1 is unmaintained and most of its modules no longer import with
current diffusers; the runner only ever used its helper with the shallowest
branch, which this module does on its own. Every ``interval`` steps the UNet
runs in full and every block's output is kept; on the steps between, only the
shallowest skip branch is computed (``conv_in`` -> the last layer of the last
up block -> ``conv_out``) and every deeper block answers with its kept output.
High-level features change slowly between steps, so images stay close while
most of the UNet is skipped. Transformers have diffusers' own cache hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UNetFeatureReuse:
    def __init__(self, pipe: Any, interval: int) -> None:
        self.pipe, self.interval = pipe, interval
        self.step = -1
        self.first: int | None = None
        self.kept: dict[tuple[str, int, int, int], Any] = {}

    def enable(self) -> None:
        unet = self.pipe.unet
        forward = unet.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            timestep = args[1] if len(args) > 1 else kwargs["timestep"]
            timesteps = list(self.pipe.scheduler.timesteps)
            step = timesteps.index(timestep.item() if hasattr(timestep, "item") else timestep)
            if self.first is None or step <= self.step:
                # A new pipeline call (img2img starts part-way into the schedule): its
                # first step runs in full, so nothing kept from another call is reused.
                self.first = step
            self.step = step
            return forward(*args, **kwargs)

        unet.forward = counted
        for index, block in enumerate(unet.down_blocks):
            self._wrap_layers(block, "down", index, lambda i, n: i)
            for downsampler in getattr(block, "downsamplers", None) or []:
                self._wrap(downsampler, ("down-sampler", index, 0, 0))
            self._wrap(block, ("down", index, 0, 1))
        self._wrap(unet.mid_block, ("mid", 0, 0, 1))
        count = len(unet.up_blocks)
        for index, block in enumerate(unet.up_blocks):
            depth = count - index - 1  # 0: the last, shallowest up block
            self._wrap_layers(block, "up", depth, lambda i, n: n - i - 1)
            for upsampler in getattr(block, "upsamplers", None) or []:
                self._wrap(upsampler, ("up-sampler", depth, 0, 1))
            self._wrap(block, ("up", depth, 0, 0))

    def _wrap_layers(self, block: Any, kind: str, depth: int, order: Callable[[int, int], int]) -> None:
        resnets = list(getattr(block, "resnets", None) or [])
        for part, modules in (("resnet", resnets), ("attention", list(getattr(block, "attentions", None) or []))):
            for i, module in enumerate(modules):
                layer = order(i, len(resnets))
                self._wrap(module, (f"{kind}-{part}", depth, i, layer if kind == "up" else 1))

    def reused(self, key: tuple[str, int, int, int]) -> bool:
        """Whether this module answers from its kept output on the current step."""
        if (self.step - (self.first or 0)) % self.interval == 0:
            return False  # a full step
        kind, depth, _, layer = key
        # Only the shallowest branch runs: the last up block and its last layer (layer 0).
        return not (kind.startswith("up") and depth == 0 and layer == 0)

    def _wrap(self, module: Any, key: tuple[str, int, int, int]) -> None:
        forward = module.forward

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.reused(key) and key in self.kept:
                return self.kept[key]
            self.kept[key] = result = forward(*args, **kwargs)
            return result

        module.forward = wrapped
