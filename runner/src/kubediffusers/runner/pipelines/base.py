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
from collections.abc import Hashable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from PIL import Image

from kubediffusers.runner import families, optimizations, schedulers, transformer_cache
from kubediffusers.runner.adapters import Adapters
from kubediffusers.runner.errors import GpuOutOfMemory, InvalidInput, ModelUnavailable, one_line
from kubediffusers.runner.params import TaskParams
from kubediffusers.runner.pipelines.buckets import Buckets
from kubediffusers.runner.pipelines.prompt_cache import PromptCache
from kubediffusers.runner.pipelines.support import check_task_support
from kubediffusers.runner.safety import SafetyChecker
from kubediffusers.runner.settings import DType, RunnerSettings, Task, parse_size
from kubediffusers.runner.types import GeneratedImage, StepCallback, Work

if TYPE_CHECKING:
    from kubediffusers.runner.pipelines.recompiles import UncompiledWatch

log = logging.getLogger(__name__)

# Component libraries a checkpoint may name in model_index.json; anything else
# would be code shipped inside the repository, which is never run.
TRUSTED_LIBRARIES = {"diffusers", "transformers", None}


class TaskPipeline(ABC):
    task: ClassVar[Task]
    family: families.Family = families.UNKNOWN  # the checkpoint's row (families.FAMILIES), set by load
    # Whether a request may pick a scheduler (schedulers.SCHEDULERS); False keeps the checkpoint's.
    per_request_scheduler: ClassVar[bool] = True
    # Add-ons loaded with the model (None: not configured): LoRA adapters and the safety checker.
    adapters: Adapters | None = None
    safety: SafetyChecker | None = None
    # The batch sizes calls are padded to when compiled (pipelines.buckets); none by default.
    buckets: Buckets = Buckets()
    # Whether warm-up can run every shape a request at a compiled size has (each size and
    # guidance on and off): then, once ready, nothing compiles (pipelines.recompiles). Not
    # so for videos (frames) and upscaling (the input's size), which compile on first use.
    warms_request_shapes: ClassVar[bool] = False
    # (width, height) of the image sizes warm-up compiles (settings.compile_sizes); set by load.
    compiled_sizes: tuple[tuple[int, int], ...] = ()
    # Counts calls at other sizes once ready (model.ModelHolder installs it).
    uncompiled: UncompiledWatch | None = None

    def __init__(self, pipe: Any, device: str) -> None:
        self.pipe = pipe
        self.device = device
        self.prompt_cache = PromptCache(0)  # load() sizes it from the settings

    # -- loading -----------------------------------------------------------

    # The diffusers class whose from_pretrained loads the checkpoint (an auto
    # pipeline picks the concrete class from model_index.json).
    diffusers_class: ClassVar[str]

    @classmethod
    def auto_class(cls) -> Any:
        import diffusers

        return getattr(diffusers, cls.diffusers_class)

    @classmethod
    def load(cls, snapshot: Path, settings: RunnerSettings) -> TaskPipeline:
        check_checkpoint(snapshot)
        check_task_support(snapshot, cls.task, settings.model_id)
        family = families.family_of(snapshot) or families.UNKNOWN
        quiet_libraries()
        device = settings.resolved_device()
        dtype = torch_dtype(settings.model_dtype, device, family.gpu_dtype)
        try:
            pipe = cls.auto_class().from_pretrained(
                snapshot,
                dtype=dtype,
                variant=settings.model_variant,
                use_safetensors=True,
                local_files_only=True,
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load {settings.model_id} for {cls.task.value}: {one_line(exc)}") from None
        pipe = optimizations.place(pipe, settings, device)
        pipe.set_progress_bar_config(disable=True)
        adapters = Adapters.load(pipe, settings)  # before compiling: the compiled graph then includes them
        applied = optimizations.apply(pipe, settings, dtype)
        log.info("%s checkpoint; optimizations: %s", family.name, ", ".join(applied) or "none")
        pipeline = cls(pipe, device)
        pipeline.family = family
        pipeline.prompt_cache = PromptCache(settings.prompt_cache_size)
        pipeline.buckets = Buckets.of(settings)
        if settings.compiles:
            pipeline.compiled_sizes = pipeline.sizes_to_compile(settings)
        pipeline.adapters, pipeline.safety = adapters, SafetyChecker.load(settings, device, dtype)
        return pipeline

    # -- preparing a request ----------------------------------------------

    @abstractmethod
    def prepare(self, params: Any, images: dict[str, Image.Image], settings: RunnerSettings) -> Work:
        """Turn a request within the runner's limits (``params.check_limits``
        passed) and its decoded uploads into work for this model: what depends
        on the model (native size, size step, noise level, frames) is decided
        here, and the size it will generate is checked (``inputs``)."""

    # -- inference ---------------------------------------------------------

    @abstractmethod
    def call_arguments(self, work: Work) -> dict[str, Any]:
        """Task-specific keyword arguments of the diffusers call."""

    def steps_of(self, work: Work) -> int:
        params: TaskParams = work.params
        return params.steps_run()

    @abstractmethod
    def run(self, work: Work, on_step: StepCallback | None = None) -> list[Any]:
        """Generate one request's outputs (one per seed)."""

    def batch_key(self, work: Work) -> Hashable | None:
        """Requests with equal keys may share one pipeline call; None: never batched."""
        return None

    def run_batch(self, works: list[Work], on_step: StepCallback | None = None) -> list[list[Any]]:
        """Generate several requests' outputs; only called with one work unless
        ``batch_key`` says the works are compatible."""
        if len(works) != 1:
            raise ValueError(f"{type(self).__name__} does not batch")
        return [self.run(works[0], on_step)]

    # -- what the worker runs: the add-ons around run_batch --------------------

    def job_key(self, work: Work) -> Hashable | None:
        """``batch_key`` plus the request's LoRA adapters: different adapter sets never share a call."""
        key = self.batch_key(work)
        return None if key is None else (key, self.adapters.pick(work.params) if self.adapters else ())

    def generate(self, works: list[Work], on_step: StepCallback | None = None) -> list[list[Any]]:
        """The worker's entry point: the works' adapters, the call, then the safety check."""
        if self.adapters is not None:
            self.adapters.activate(self.adapters.pick(works[0].params))
        if self.uncompiled is not None:  # a batch shares one size (batch_key)
            results = self.uncompiled.run(self.request_size(works[0]), partial(self.run_batch, works, on_step))
        else:
            results = self.run_batch(works, on_step)
        if self.safety is not None:
            self.safety.check(works, results)
        return results

    @abstractmethod
    def warmup_work(self) -> Work:
        """A small request run once before the runner reports ready."""

    def warmup_batches(self, compiled: bool, max_batch_size: int) -> list[list[Work]]:
        """What to run before reporting ready: the warm-up request, plus, when
        compiled, the other shapes requests will have, so that no client waits
        for a recompilation: here (one image per call) each compiled size with
        guidance on and off."""
        if not compiled or not self.warms_request_shapes:
            return [[self.warmup_work()]]
        return [[work] for work in self.sized_warmups() for work in with_and_without_guidance(work)]

    def sized_warmups(self) -> list[Work]:
        """The warm-up request at each compiled size (at the default size when none is set)."""
        first = self.warmup_work()
        return [self.sized(first, size) for size in self.compiled_sizes] or [first]

    def sized(self, work: Work, size: tuple[int, int]) -> Work:
        """``work`` generating (width, height): its width and height, and its input images resized."""
        width, height = size
        params = work.params
        if {"width", "height"} <= set(type(params).model_fields):
            params = params.model_copy(update={"width": width, "height": height})
        return replace(work, params=params, images={name: image.resize(size) for name, image in work.images.items()})

    def request_size(self, work: Work) -> tuple[int, int]:
        """(width, height) the work generates at: the request's, else the checkpoint's default
        (tasks that generate at their input's size say so)."""
        height, width = self.default_size()
        return getattr(work.params, "width", None) or width, getattr(work.params, "height", None) or height

    def sizes_to_compile(self, settings: RunnerSettings) -> tuple[tuple[int, int], ...]:
        """(width, height) of each size warm-up compiles: compile_sizes, checked against this
        checkpoint's size step, or its default size; none where warm-up cannot cover requests."""
        if not self.warms_request_shapes:
            return ()
        if not settings.compile_sizes:
            height, width = self.default_size()
            return ((width, height),)
        sizes = tuple(parse_size(text) for text in settings.compile_sizes)
        step = self.size_multiple
        if bad := [f"{w}x{h}" for w, h in sizes if w % step or h % step]:
            # Refused, not skipped: no request could have that size, so compiling it would serve nothing.
            raise ModelUnavailable(
                f"compile_sizes {', '.join(bad)}: this checkpoint generates sizes in steps of {step} pixels; "
                f"use multiples of {step} (KUBEDIFFUSERS_COMPILE_SIZES, spec.runner.optimizations.compile.sizes)"
            )
        height, width = self.default_size()
        if (width, height) not in sizes:
            log.info("compile_sizes leaves out the default size %dx%d: requests that name no size run it uncompiled", width, height)
        return sizes

    def with_family_defaults(self, params: Any, settings: RunnerSettings) -> Any:
        """The request with the checkpoint family's defaults (steps, guidance); refuses fields it does not take."""
        return families.apply_defaults(self.family, params, settings)

    def family_arguments(self, work: Work, arguments: dict[str, Any]) -> dict[str, Any]:
        """The diffusers call's arguments with the family's own (text length, true CFG, fixed ones)."""
        return families.call_arguments(self.family, work.params, arguments)

    @property
    def size_multiple(self) -> int:
        """Pixel step of the sizes the checkpoint generates: the VAE's factor times the transformer's patch, at least 8."""
        return max(8, int(getattr(self.pipe, "vae_scale_factor", 8)) * self.family.patch) if self.family.transformer else 8

    def default_size(self) -> tuple[int, int]:
        """(height, width) the checkpoint was trained for."""
        if self.family.transformer:
            return dit_default_size(self.pipe, self.size_multiple)
        unet = getattr(self.pipe, "unet", None)
        scale = getattr(self.pipe, "vae_scale_factor", 8)
        sample = getattr(getattr(unet, "config", None), "sample_size", 64) or 64
        if isinstance(sample, (list, tuple)):
            return int(sample[0]) * scale, int(sample[1]) * scale
        return int(sample) * scale, int(sample) * scale


class BatchedPipeline(TaskPipeline):
    """A pipeline that runs compatible requests in one diffusers call.

    Each output gets its own generator (seed + i) and a prompt list entry, so a
    request's images do not depend on what else shares the call. A request
    alone takes the same path, as a batch of one.
    """

    @abstractmethod
    def per_item_arguments(self, work: Work) -> dict[str, Any]:
        """Arguments that may differ between requests in a batch (prompts, input images)."""

    @abstractmethod
    def shared_arguments(self, work: Work) -> dict[str, Any]:
        """Arguments every request in a batch must share (size, steps, guidance, ...)."""

    def call_arguments(self, work: Work) -> dict[str, Any]:
        return {**self.shared_arguments(work), **self.per_item_arguments(work)}

    def batch_key(self, work: Work) -> Hashable | None:
        sizes = tuple(sorted((name, image.size) for name, image in work.images.items()))
        # One call runs one scheduler: requests naming different ones never share it.
        return tuple(sorted(self.shared_arguments(work).items())) + sizes + (("scheduler", work.params.scheduler),)

    warms_request_shapes = True

    def warmup_batches(self, compiled: bool, max_batch_size: int) -> list[list[Work]]:
        if not compiled:
            return [[self.warmup_work()]]
        # At each compiled image size, every batch size calls will have (pipelines.buckets),
        # with guidance on and off.
        batches = self.buckets.sizes or tuple(sorted({1, max_batch_size}))
        return [[replace(w, num_images=n)] for sized in self.sized_warmups() for n in batches for w in with_and_without_guidance(sized)]

    def guided(self, kwargs: dict[str, Any]) -> bool:
        """Whether diffusers will run classifier-free guidance for these arguments (as its pipelines decide)."""
        unet = getattr(self.pipe, "unet", None)
        return kwargs.get("guidance_scale", 0) > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is None

    def run(self, work: Work, on_step: StepCallback | None = None) -> list[GeneratedImage]:
        return self._call([work], on_step)[0]

    def run_batch(self, works: list[Work], on_step: StepCallback | None = None) -> list[list[Any]]:
        if len(works) == 1:
            return [self.run(works[0], on_step)]
        return self._call(works, on_step)

    def _call(self, works: list[Work], on_step: StepCallback | None) -> list[list[GeneratedImage]]:
        kwargs = self.shared_arguments(works[0])
        per_row = [*self.per_item_arguments(works[0]), "generator"]
        for name in self.per_item_arguments(works[0]):
            kwargs[name] = [self.per_item_arguments(w)[name] for w in works for _ in w.seeds]
        kwargs["generator"] = [torch.Generator(device="cpu").manual_seed(s) for w in works for s in w.seeds]
        kwargs["num_images_per_prompt"] = 1
        kwargs["output_type"] = "pt"  # quantized on the device: postprocess.to_pixels
        guided, steps = self.guided(kwargs), self.steps_of(works[0])

        def call(chunk: dict[str, Any], index: int, count: int) -> Any:
            # One diffusers call at a compiled batch size (pipelines.buckets); a split call's steps add up.
            self.prompt_cache.replace_prompts(self.pipe, chunk, guided=guided)
            if on_step is not None:

                def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                    on_step(index * steps + step + 1, count * steps)
                    return tensors

                chunk["callback_on_step_end"] = callback
            return call_pipeline(self.pipe, chunk)

        with schedulers.using(self.pipe, works[0].params.scheduler):
            images = iter(self.buckets.run(kwargs, per_row, call))
        results = []
        for work in works:
            results.append(
                [GeneratedImage(image=img, seed=seed, nsfw=bool(flag)) for seed, (img, flag) in zip(work.seeds, images, strict=False)]
            )  # one shared iterator over the batch
        return results


def with_and_without_guidance(work: Work) -> tuple[Work, Work]:
    """Classifier-free guidance doubles the denoiser's batch: warm-up compiles both (turbo models run with guidance 0)."""

    def at(scale: float) -> Work:
        return replace(work, params=work.params.model_copy(update={"guidance_scale": scale}))

    return at(7.5), at(0.0)


def call_pipeline(pipe: Any, kwargs: dict[str, Any]) -> Any:
    """One diffusers call, with its failures mapped to the runner's errors."""
    transformer_cache.reset(pipe)  # a cancelled call's cache state never reaches the next
    try:
        with torch.inference_mode():
            return pipe(**kwargs)
    except torch.OutOfMemoryError:
        free_accelerator_memory()
        raise GpuOutOfMemory("the GPU ran out of memory for this request; memory was freed, retry with fewer images or frames, or a smaller size") from None
    except ValueError as exc:
        # diffusers validates inputs (sizes, strengths, noise levels) with ValueError.
        raise InvalidInput(one_line(exc)) from None


def dit_default_size(pipe: Any, multiple: int) -> tuple[int, int]:
    """A transformer family's native size: its transformer config's sample size
    (SD3), else the pipeline's default sample size (FLUX hard-codes 128 latents),
    else the VAE's sample size (Z-Image), in pixels and a multiple of ``multiple``."""
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    sample = getattr(getattr(getattr(pipe, "transformer", None), "config", None), "sample_size", None)
    sample = sample or getattr(pipe, "default_sample_size", None)
    pixels = int(sample) * scale if sample else int(getattr(getattr(pipe.vae, "config", None), "sample_size", 1024))
    side = max(multiple, pixels // multiple * multiple)
    return side, side


def torch_dtype(dtype: DType, device: str, gpu_default: str = "float16") -> torch.dtype:
    if dtype is DType.AUTO:
        # Half precision is what GPUs are fast at; CPUs are not. Families whose
        # text encoders overflow float16 (T5, Gemma, Qwen) default to bfloat16.
        return torch.float32 if device == "cpu" else getattr(torch, gpu_default)
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
            raise ModelUnavailable(f"component {name!r} comes from {library!r}, code inside the checkpoint; remote code is never run")
    for pattern in ("*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl"):
        for path in snapshot.rglob(pattern):
            sibling = any(path.parent.glob("*.safetensors"))
            if not sibling:
                raise ModelUnavailable(
                    f"{path.relative_to(snapshot)} is a pickled checkpoint with no safetensors alongside; only safetensors weights are loaded"
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
