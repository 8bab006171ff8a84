"""The small base class every task's pipeline derives from.

A task pipeline knows which diffusers auto-pipeline serves its task and how to
turn one validated request into call arguments. The base class owns what is
common: loading offline and safely, seeding each image, progress and
cancellation between steps, out-of-memory recovery and warm-up.
"""

from __future__ import annotations

import gc
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from kubediffusers.runner.errors import GpuOutOfMemory, InvalidInput, ModelUnavailable
from kubediffusers.runner.pipelines.support import check_task_support
from kubediffusers.runner.settings import DType, RunnerSettings, Task

log = logging.getLogger(__name__)

# Component libraries a checkpoint may name in model_index.json; anything else
# would be code shipped inside the repository, which is never run.
TRUSTED_LIBRARIES = {"diffusers", "transformers", None}


@dataclass
class Work:
    """One validated request, ready for the GPU thread."""

    params: Any  # the route's pydantic params model
    seed: int
    num_images: int
    images: dict[str, Image.Image] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        # Image i uses seed + i, so any image can be reproduced alone.
        return [self.seed + i for i in range(self.num_images)]


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    nsfw: bool = False


class Cancelled(Exception):
    """Raised between denoising steps when nobody waits for the result any more."""


StepCallback = Callable[[int, int], None]  # (steps done, total steps); may raise Cancelled


class TaskPipeline(ABC):
    task: ClassVar[Task]

    def __init__(self, pipe: Any, device: str) -> None:
        self.pipe = pipe
        self.device = device

    # -- loading -----------------------------------------------------------

    @classmethod
    @abstractmethod
    def auto_class(cls) -> Any:
        """The diffusers class whose from_pretrained picks the concrete pipeline."""

    @classmethod
    def load(cls, snapshot: Path, settings: RunnerSettings) -> "TaskPipeline":
        check_checkpoint(snapshot)
        check_task_support(snapshot, cls.task, settings.model_id)
        quiet_libraries()
        device = settings.resolved_device()
        dtype = torch_dtype(settings.dtype, device)
        try:
            pipe = cls.auto_class().from_pretrained(
                snapshot,
                dtype=dtype,
                variant=settings.model_variant,
                use_safetensors=True,
                local_files_only=True,
            )
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelUnavailable(f"cannot load {settings.model_id} for {cls.task.value}: {one_line(exc)}") from None
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device)

    # -- inference ---------------------------------------------------------

    @abstractmethod
    def call_arguments(self, work: Work) -> dict[str, Any]:
        """Task-specific keyword arguments of the diffusers call."""

    def steps_of(self, work: Work) -> int:
        return int(work.params.num_inference_steps)

    def run(self, work: Work, on_step: StepCallback | None = None) -> list[GeneratedImage]:
        total = self.steps_of(work)
        kwargs = self.call_arguments(work)
        kwargs["generator"] = [torch.Generator(device="cpu").manual_seed(s) for s in work.seeds]
        kwargs["num_images_per_prompt"] = work.num_images
        if on_step is not None:
            def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                on_step(step + 1, total)
                return tensors

            kwargs["callback_on_step_end"] = callback
        try:
            with torch.inference_mode():
                output = self.pipe(**kwargs)
        except torch.OutOfMemoryError:
            free_accelerator_memory()
            raise GpuOutOfMemory(
                "the GPU ran out of memory for this request; memory was freed, "
                "retry with fewer images or a smaller size"
            ) from None
        except ValueError as exc:
            # diffusers validates inputs (sizes, strengths) with ValueError.
            raise InvalidInput(one_line(exc)) from None
        nsfw = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
        return [
            GeneratedImage(image=img, seed=seed, nsfw=bool(flag))
            for img, seed, flag in zip(output.images, work.seeds, nsfw, strict=False)
        ]

    @abstractmethod
    def warmup_work(self) -> Work:
        """A small request run once before the runner reports ready."""

    def default_size(self) -> tuple[int, int]:
        """(height, width) the checkpoint was trained for."""
        unet = getattr(self.pipe, "unet", None)
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        sample = getattr(getattr(unet, "config", None), "sample_size", 64) or 64
        if isinstance(sample, (list, tuple)):
            return int(sample[0]) * scale, int(sample[1]) * scale
        return int(sample) * scale, int(sample) * scale


def torch_dtype(dtype: DType, device: str) -> torch.dtype:
    if dtype is DType.AUTO:
        # Half precision is what GPUs are fast at; CPUs are not.
        return torch.float32 if device == "cpu" else torch.float16
    return {DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16, DType.FLOAT32: torch.float32}[dtype]


def check_checkpoint(snapshot: Path) -> None:
    """Refuse checkpoints that would run code or unpickle weights."""
    index_file = snapshot / "model_index.json"
    if not index_file.is_file():
        raise ModelUnavailable(f"{snapshot} has no model_index.json: not a diffusers checkpoint")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelUnavailable(f"model_index.json is unreadable: {one_line(exc)}") from None
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library = value[0]
        if library not in TRUSTED_LIBRARIES:
            raise ModelUnavailable(
                f"component {name!r} comes from {library!r}, code inside the checkpoint; remote code is never run"
            )
    for pattern in ("*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl"):
        for path in snapshot.rglob(pattern):
            sibling = any(path.parent.glob("*.safetensors"))
            if not sibling:
                raise ModelUnavailable(
                    f"{path.relative_to(snapshot)} is a pickled checkpoint with no safetensors alongside; "
                    "only safetensors weights are loaded"
                )


def quiet_libraries() -> None:
    """Progress bars from loading belong on a terminal, not in `kubectl logs`."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
