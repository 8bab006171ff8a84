"""Per-request schedulers: a fixed list of diffusers schedulers, those the loaded
checkpoint's own scheduler is compatible with.

A request's ``scheduler`` names one of ``SCHEDULERS`` (unset: the checkpoint's
own). The route checks the name against the loaded model (``check``, a 400
listing the allowed ones); the pipeline swaps it in for its call (``using``)
and back, on the one inference thread. Requests with different schedulers
never share a batch (the batch key holds the name). Nothing here imports torch
or diffusers at import time: the classes are looked up when a request runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubediffusers.runner.errors import InvalidInput


@dataclass(frozen=True)
class SchedulerChoice:
    diffusers_class: str
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the checkpoint's scheduler config


SCHEDULERS: dict[str, SchedulerChoice] = {
    "euler": SchedulerChoice("EulerDiscreteScheduler"),
    "euler-ancestral": SchedulerChoice("EulerAncestralDiscreteScheduler"),
    "dpm++-2m": SchedulerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpm++-2m-karras": SchedulerChoice("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "ddim": SchedulerChoice("DDIMScheduler"),
    "unipc": SchedulerChoice("UniPCMultistepScheduler"),
    # Few-step sampling for LCM-distilled checkpoints (or an LCM LoRA); it works on any
    # epsilon model but needs such weights to look good.
    "lcm": SchedulerChoice("LCMScheduler"),
}

DESCRIPTION = (
    f"Scheduler (sampler) for this request, one of {', '.join(SCHEDULERS)} that the loaded model is compatible with "
    "(a name it is not compatible with gets a 400 listing the allowed ones). Unset: the checkpoint's own."
)

# Compatible with every epsilon/v-prediction UNet even where diffusers' list omits it.
_ALWAYS_COMPATIBLE = frozenset({"LCMScheduler"})


def allowed(pipeline: Any) -> list[str]:
    """Names in ``SCHEDULERS`` the task pipeline's checkpoint scheduler is compatible with
    (none where the task pipeline keeps its own: ``per_request_scheduler``)."""
    own = getattr(pipeline.pipe, "scheduler", None)
    if own is None or not getattr(pipeline, "per_request_scheduler", True):
        return []
    # ``compatibles`` is an instance property of diffusers schedulers.
    compatible = {cls.__name__ for cls in getattr(own, "compatibles", ())} | {type(own).__name__}
    compatible |= _ALWAYS_COMPATIBLE if "DDIMScheduler" in compatible else frozenset()
    return [name for name, choice in SCHEDULERS.items() if choice.diffusers_class in compatible]


def check(pipeline: Any, name: str | None) -> None:
    """400 naming the allowed schedulers when ``name`` is not one of them."""
    if name is None:
        return
    names = allowed(pipeline)
    if name not in names:
        offered = ", ".join(names) if names else "none (this model keeps its own scheduler)"
        raise InvalidInput(f"scheduler {name!r} is not available for this model; allowed: {offered}, or unset for the checkpoint's own")


def build(pipe: Any, name: str) -> Any:
    import diffusers

    choice = SCHEDULERS[name]
    return getattr(diffusers, choice.diffusers_class).from_config(pipe.scheduler.config, **choice.config)


@contextmanager
def using(pipe: Any, name: str | None) -> Iterator[None]:
    """Run the block with the named scheduler in place of the checkpoint's, then put it back."""
    if name is None:
        yield
        return
    own = pipe.scheduler
    pipe.scheduler = build(pipe, name)
    try:
        yield
    finally:
        pipe.scheduler = own
