"""Runner configuration: every knob is an environment variable with the
``KUBEDIFFUSERS_`` prefix, so the operator can set them on the container and
``kubediffusers local`` can set the very same ones on a laptop."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "KUBEDIFFUSERS_"

# What a model is named by, for the runner and the fetcher alike (the operator's
# CRD keeps its own copy; tests/runner/test_settings_contract.py proves they agree).
# ASCII classes, not \w: the CRD's patterns are checked by Kubernetes, whose \w is ASCII.
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$"
REVISION_PATTERN = r"^[A-Za-z0-9_.\-/]+$"
# No dot: diffusers names variant weights <name>.<variant>.safetensors.
VARIANT_PATTERN = r"^[A-Za-z0-9_\-]+$"


# Add-ons (fetched with the model, loaded at start-up: kubediffusers.runner.addons).
SAFETY_CHECKER_ID = "CompVis/stable-diffusion-safety-checker"
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# safetensors only; a path inside the repository, never above it (checked again by LoraAdapter).
WEIGHT_NAME_PATTERN = r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\-/]*\.safetensors$"
MAX_LORA_SCALE = 10.0

# Image sizes compiled at warm-up ("WIDTHxHEIGHT", compile_sizes; the operator's CRD keeps a copy).
COMPILE_SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
# A request's sides (params.Height/Width) and the step every checkpoint's sizes share.
MIN_SIDE, MAX_SIDE, SIDE_STEP = 8, 8192, 8
# Tasks whose warm-up can run every shape a request at a compiled size has (pipelines.base:
# warms_request_shapes); a video's frames and an upscale's input are other shapes still.
SIZED_TASKS = ("text-to-image", "image-to-image", "inpainting", "image-variation")


def parse_size(text: str) -> tuple[int, int]:
    """(width, height) of a "WIDTHxHEIGHT" string that matched COMPILE_SIZE_PATTERN."""
    width, height = text.split("x")
    return int(width), int(height)


class LoraAdapter(BaseModel):
    """One declared LoRA adapter (spec.loras[]): fetched with the model, loaded at start-up under its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=ADAPTER_NAME_PATTERN, description="Adapter name requests use (or the repository id).")
    id: str = Field(pattern=MODEL_ID_PATTERN, description="Hugging Face repository id of the adapter.")
    revision: str = Field(default="main", min_length=1, pattern=REVISION_PATTERN, description="Branch, tag or commit.")
    weight_name: str | None = Field(
        default=None, pattern=WEIGHT_NAME_PATTERN, description="The .safetensors file in the repository; unset: the one diffusers finds at its root."
    )
    scale: float = Field(default=1.0, ge=0, le=MAX_LORA_SCALE, description="Weight when a request names the adapter with null.")

    @model_validator(mode="after")
    def _inside_the_repository(self) -> LoraAdapter:
        if self.weight_name is not None and ".." in self.weight_name.split("/"):
            raise ValueError("weight_name must be a path inside the repository")
        return self


class SafetyPolicy(StrEnum):
    FLAG = "flag"  # report nsfw: true, return the image as generated
    BLANK = "blank"  # report nsfw: true and return a black image of the same size


class Task(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINTING = "inpainting"
    IMAGE_TO_VIDEO = "image-to-video"
    UPSCALE = "upscale"
    IMAGE_VARIATION = "image-variation"
    TEXT_TO_VIDEO = "text-to-video"


class DType(StrEnum):
    AUTO = "auto"  # float16 on CUDA, float32 on CPU
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class Attention(StrEnum):
    SDPA = "sdpa"  # PyTorch scaled_dot_product_attention: flash/memory-efficient kernels
    DEFAULT = "default"  # whatever the checkpoint's classes pick


class CompileMode(StrEnum):
    DEFAULT = "default"
    REDUCE_OVERHEAD = "reduce-overhead"  # CUDA graphs: fewest launches, fixed shapes
    MAX_AUTOTUNE = "max-autotune"  # autotuned kernels plus CUDA graphs; longest compile


class ImageFormat(StrEnum):
    """How generated images are encoded (request ``output_format``, setting ``output_format``)."""

    PNG = "png"  # lossless, at a fast compress level (encoding.PNG_COMPRESS_LEVEL)
    JPEG = "jpeg"
    WEBP = "webp"


class CpuOffload(StrEnum):
    NONE = "none"
    MODEL = "model"  # whole components move to the GPU when used
    SEQUENTIAL = "sequential"  # layer by layer: smallest GPU memory, slowest


class TransformerCache(StrEnum):
    NONE = "none"
    FIRST_BLOCK = "first-block"  # diffusers' First Block Cache: skip the other blocks while the first block's residual barely changes
    TAYLORSEER = "taylorseer"  # diffusers' TaylorSeer: full steps every few, the ones between predicted


class Compatibility(StrEnum):
    """Whose status codes and defaults the runner answers with (compat/)."""

    NONE = "none"  # the native API: 503 + Retry-After for queue full, not ready, OOM
    LIVEPEER = "livepeer"  # only the statuses livepeer ai-runner's spec declares, and its defaults


LIVEPEER_UPSCALE_MAX_PIXELS = 4096 * 4096

# go-livepeer's container manager starts runner images with these two (ai/worker/docker.go).
LIVEPEER_ENV_FALLBACKS = {"task": "PIPELINE", "model_id": "MODEL_ID"}


class RunnerSettings(BaseSettings):
    """Settings of one runner process: one task, one model."""

    # An empty variable is an unset one (the operator and `kubediffusers local` may write KEY="").
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True)

    task: Task = Field(description="The one task this process serves; only its route exists.")
    model_id: str = Field(
        min_length=1,
        pattern=MODEL_ID_PATTERN,
        description="Hugging Face repository id, e.g. stabilityai/sd-turbo.",
    )
    model_revision: str = Field(default="main", min_length=1, pattern=REVISION_PATTERN, description="Branch, tag or commit of the model.")
    model_variant: str | None = Field(default=None, pattern=VARIANT_PATTERN, description="Weight variant, e.g. fp16; unset for the default weights.")
    model_dtype: DType = Field(default=DType.AUTO, description="Torch dtype the pipeline runs in.")
    model_dir: Path = Field(default=Path("/models"), description="Hugging Face cache directory holding the model.")
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="auto picks cuda when a GPU is visible, else cpu.",
    )

    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the HTTP server binds.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level of the runner and uvicorn.")

    max_queue_size: int = Field(default=16, ge=1, le=10_000, description="Requests waiting beyond the running one; more get 503.")
    request_timeout_seconds: float = Field(default=300.0, gt=0, description="A request not done by then gets 504.")
    auth_token: SecretStr | None = Field(default=None, description="When set, inference routes need 'Authorization: Bearer <token>'.")

    max_pixels: int = Field(default=1536 * 1536, ge=64 * 64, description="Largest width*height a request may ask for.")
    max_steps: int = Field(default=150, ge=1, le=1000, description="Largest num_inference_steps a request may ask for.")
    max_images_per_request: int = Field(default=4, ge=1, le=64, description="Largest num_images_per_prompt.")
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest request body; more gets 413.")
    body_timeout_seconds: float = Field(default=30.0, gt=0, description="A request body not fully received by then gets 408 (slow clients).")
    max_upload_pixels: int = Field(default=4096 * 4096, ge=64 * 64, description="Largest declared width*height of an uploaded image before decoding.")
    warmup: bool = Field(default=True, description="Run one small generation before reporting ready.")
    max_video_frames: int = Field(default=25, ge=1, le=1000, description="Largest num_frames a text-to-video or image-to-video request may ask for.")
    job_ttl_seconds: float = Field(default=3600.0, gt=0, description="How long a finished async job's result is kept.")
    max_jobs: int = Field(default=100, ge=1, le=100_000, description="Most async jobs kept at once; the oldest finished go first.")
    max_job_bytes: int = Field(
        default=2 * 1024**3, ge=64 * 1024, description="Most bytes of async job results kept at once; past it the oldest finished go first."
    )
    shared_jobs: bool = Field(
        default=False,
        description="Keep async jobs as files in jobs_dir, on a claim every replica mounts, so any replica answers /jobs/{id} (jobfiles.py).",
    )
    jobs_dir: Path = Field(
        default=Path(".kubediffusers-jobs"), description="Where shared jobs live; a relative path is under model_dir. One directory per pipeline."
    )

    # -- connections and shutdown ---------------------------------------------
    drain_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="After SIGTERM, how long running and queued work may take to finish before it fails; unset: the request timeout.",
    )
    head_timeout_seconds: float = Field(default=10.0, gt=0, le=3600, description="A request line and headers not fully received by then get 408.")
    write_timeout_seconds: float = Field(
        default=20.0, gt=0, le=3600, description="A client taking less than 256 KiB of an answer in this long is disconnected."
    )
    max_connections: int = Field(default=1000, ge=1, le=1_000_000, description="Open connections; past it idle ones are closed, then only probes are answered.")

    # -- clients of other APIs (compat/) -------------------------------------
    compatibility: Compatibility = Field(
        default=Compatibility.NONE,
        description="livepeer: every status is one livepeer ai-runner declares for the route (500 for 503/504), and livepeer's defaults apply.",
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        max_length=64,
        description='Origins browsers may call the runner from (CORS), e.g. ["https://app.example"] or ["*"]; empty: CORS off.',
    )

    # -- output ------------------------------------------------------------
    output_format: ImageFormat = Field(default=ImageFormat.PNG, description="Image encoding when a request names none (output_format or Accept).")
    output_quality: int = Field(default=90, ge=1, le=100, description="JPEG/WebP quality when a request names none; PNG is lossless.")

    # -- batching ----------------------------------------------------------
    max_batch_size: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Most images one pipeline call generates for compatible queued requests; 1 turns batching off.",
    )
    batch_window_ms: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description="How long the worker waits for compatible requests to fill a batch once one is ready.",
    )

    # -- optimizations (all opt-in but SDPA; safe defaults) --------------------
    attention: Attention = Field(default=Attention.SDPA, description="Attention implementation.")
    channels_last: bool = Field(default=False, description="Run the UNet/VAE in channels_last memory format.")
    fuse_qkv: bool = Field(default=False, description="Fuse the attention QKV projections into one matmul.")
    compile_unet: bool = Field(default=False, description="torch.compile the UNet/transformer (done during warm-up).")
    compile_vae: bool = Field(default=False, description="torch.compile the VAE decoder (done during warm-up).")
    compile_text_encoder: bool = Field(
        default=False,
        description=(
            "torch.compile the text encoders (done during warm-up): for prompts the prompt cache does not hold; "
            "with the cache (SD, SDXL) prompts are encoded one at a time, so one graph serves every batch."
        ),
    )
    compile_mode: CompileMode = Field(default=CompileMode.DEFAULT, description="torch.compile mode; reduce-overhead uses CUDA graphs.")
    compile_regional: bool = Field(
        default=True,
        description="Compile a transformer's repeated blocks once each (regional compilation: a shorter cold start) instead of the whole model; UNets compile whole.",
    )
    compile_batch_sizes: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            "Batch sizes compiled at warm-up (a JSON list, e.g. [1, 2, 4]); every call is padded up to one, or split, "
            "so none compiles in the request path; unset: 1, 2, 4, ... up to the largest call (max_batch_size or max_images_per_request)."
        ),
    )
    compile_sizes: list[Annotated[str, Field(pattern=COMPILE_SIZE_PATTERN)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            'Image sizes compiled at warm-up, "WIDTHxHEIGHT" (a JSON list, e.g. ["512x512", "768x512"]), each at every batch size, '
            "with and without guidance; after warm-up a call at another size runs uncompiled (eagerly) instead of compiling; "
            "unset: the checkpoint's default size. Text-to-image, image-to-image, inpainting and image-variation only."
        ),
    )
    compile_cache_dir: Path | None = Field(
        default=None,
        description="Where compiled kernels are cached; default <model_dir>/.compile-cache so a restarted pod reuses them.",
    )
    deepcache_interval: int = Field(
        default=0,
        ge=0,
        le=10,
        description="UNet feature reuse (the DeepCache method, written in the runner): reuse high-level UNet features for this many steps (0 off; 2-3 for multi-step models; transformer checkpoints refuse it).",
    )
    tiny_vae_id: str | None = Field(
        default=None,
        pattern=MODEL_ID_PATTERN,
        description="Repository of a tiny autoencoder (e.g. madebyollin/taesd) decoding in place of the VAE; fetched with the model.",
    )
    prompt_cache_size: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Prompt embeddings kept (LRU) so a repeated prompt skips the text encoders (SD and SDXL); 0 turns it off.",
    )
    vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time (less memory).")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles (less memory).")
    cpu_offload: CpuOffload = Field(default=CpuOffload.NONE, description="Keep components on the CPU until used, for small GPUs.")
    text_encoder_offload: bool = Field(
        default=False,
        description="Keep the text encoders (T5-XXL, Qwen, UMT5) in CPU memory, streamed to the GPU layer by layer as they run; the rest stays on the GPU.",
    )
    transformer_cache: TransformerCache = Field(
        default=TransformerCache.NONE,
        description="diffusers' step cache for transformer checkpoints (first-block or taylorseer); refused at start-up where it does not apply.",
    )

    @property
    def compiles(self) -> bool:
        """Whether anything is compiled: warm-up then runs every shape a request has (pipelines.buckets)."""
        return self.compile_unet or self.compile_vae or self.compile_text_encoder

    @model_validator(mode="before")
    @classmethod
    def _livepeer_upscale_pixels(cls, data: object) -> object:
        # livepeer's own example (a 1024x1024 image to /upscale) makes 4096x4096: let it
        # through under livepeer compatibility unless max_pixels is set.
        if isinstance(data, dict) and str(data.get("compatibility", "")) == Compatibility.LIVEPEER and str(data.get("task", "")) == Task.UPSCALE:
            return {"max_pixels": LIVEPEER_UPSCALE_MAX_PIXELS, **data}
        return data

    @field_validator("auth_token")
    @classmethod
    def _token_can_be_sent(cls, value: SecretStr | None) -> SecretStr | None:
        # A token no client can send locks every client out with nothing logged: refuse it at start-up.
        # (The token itself is never part of the message.)
        if value is None:
            return None
        token = value.get_secret_value()
        if token != token.strip():
            raise ValueError(
                "the token starts or ends with whitespace (a secret made with `kubectl create secret --from-file` "
                "of an echoed file ends with a newline: use `echo -n` or --from-literal)"
            )
        if not token.isascii() or not token.isprintable() or " " in token:
            raise ValueError("the token must be printable ASCII without spaces, as an Authorization header carries it")
        return value

    # -- add-ons (fetched with the model: kubediffusers.runner.addons) ----------
    loras: list[LoraAdapter] = Field(default=[], max_length=16, description="LoRA adapters loaded at start-up (a JSON list); requests pick them by name or id.")
    safety_checker_enabled: bool = Field(default=False, description="Run a safety checker on every generated image; requests may skip it (safety_check).")
    safety_checker_model_id: str = Field(default=SAFETY_CHECKER_ID, pattern=MODEL_ID_PATTERN, description="Repository of the safety checker (CLIP-based).")
    safety_checker_policy: SafetyPolicy = Field(default=SafetyPolicy.FLAG, description="flag: report nsfw only; blank: also return flagged images black.")

    @model_validator(mode="after")
    def _sizes_consistent(self) -> RunnerSettings:
        if self.max_upload_pixels < self.max_pixels:
            raise ValueError("max_upload_pixels must be at least max_pixels")
        if self.cpu_offload is not CpuOffload.NONE and self.compiles:
            raise ValueError("cpu_offload cannot be combined with torch.compile")
        if self.text_encoder_offload and self.compile_text_encoder:
            # The offload hooks stream each layer in as it runs: a compiled graph would trace around them.
            raise ValueError("compile_text_encoder cannot be combined with text_encoder_offload, which streams the text encoders from CPU memory")
        if self.cpu_offload is not CpuOffload.NONE and self.text_encoder_offload:
            raise ValueError("text_encoder_offload cannot be combined with cpu_offload, which offloads the text encoders already")
        if self.compile_batch_sizes is not None:
            self._check_compile_batch_sizes(self.compile_batch_sizes)
        if self.compile_sizes is not None:
            self._check_compile_sizes(self.compile_sizes)
        names = [lora.name for lora in self.loras]
        if len(set(names)) != len(names):
            raise ValueError(f"loras: adapter names must be unique, got {names}")
        if self.loras and self.fuse_qkv:
            raise ValueError("fuse_qkv cannot be combined with loras (fused projections bypass the adapters)")
        return self

    def _check_compile_batch_sizes(self, sizes: list[int]) -> None:
        # Padding and splitting (pipelines.buckets) need increasing sizes; one past the largest call would compile for nothing.
        if sizes != sorted(set(sizes)):
            raise ValueError(f"compile_batch_sizes must be increasing without repeats, got {sizes}")
        largest = max(self.max_batch_size, self.max_images_per_request)
        if sizes[-1] > largest:
            raise ValueError(
                f"compile_batch_sizes: {sizes[-1]} is more images than one call ever has "
                f"(max_batch_size {self.max_batch_size}, max_images_per_request {self.max_images_per_request})"
            )

    def _check_compile_sizes(self, sizes: list[str]) -> None:
        # The checkpoint's own size step (16 for FLUX, 64 for some UNets) is checked when it loads (pipelines.base).
        if self.task not in SIZED_TASKS:
            raise ValueError(f"compile_sizes applies to {', '.join(SIZED_TASKS)}, not {self.task}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"compile_sizes must not repeat a size, got {sizes}")
        for text in sizes:
            width, height = parse_size(text)
            if not all(MIN_SIDE <= side <= MAX_SIDE and side % SIDE_STEP == 0 for side in (width, height)):
                raise ValueError(f"compile_sizes: {text}: sides must be multiples of {SIDE_STEP} from {MIN_SIDE} to {MAX_SIDE}")
            if width * height > self.max_pixels:
                raise ValueError(f"compile_sizes: {text} is {width * height} pixels, more than max_pixels {self.max_pixels}: no request has that size")

    def resolved_drain_seconds(self) -> float:
        # A synchronous request gets 504 at the request timeout: by then every accepted one has an answer.
        return self.drain_seconds or self.request_timeout_seconds

    def resolved_jobs_dir(self) -> Path:
        return self.model_dir / self.jobs_dir  # an absolute jobs_dir stays as it is

    def resolved_compile_cache_dir(self) -> Path:
        return self.compile_cache_dir or self.model_dir / ".compile-cache"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch  # imported lazily: settings must stay cheap to import

        return "cuda" if torch.cuda.is_available() else "cpu"


class ConfigurationError(SystemExit):
    """Raised at start-up with one line saying what is wrong."""


def livepeer_fallbacks(environ: Mapping[str, str]) -> dict[str, str]:
    """PIPELINE and MODEL_ID, where the KUBEDIFFUSERS_ names are absent, so the
    image runs as one of go-livepeer's managed containers."""
    return {field: environ[name] for field, name in LIVEPEER_ENV_FALLBACKS.items() if f"{ENV_PREFIX}{field.upper()}" not in environ and environ.get(name)}


def load_settings(**overrides: object) -> RunnerSettings:
    """Read settings from the environment, turning pydantic's report into one line."""
    try:
        return RunnerSettings(**{**livepeer_fallbacks(os.environ), **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid configuration: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)
