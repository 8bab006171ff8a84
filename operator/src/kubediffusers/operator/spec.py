"""The InferencePipeline spec as a pydantic model: the single source of truth.

The CRD's openAPIV3Schema is generated from these models (see ``crd.py`` and
``hack/gen_crd.py``), so every field has one description, one default and one set
of bounds, whether it is read by ``kubectl explain``, by the API server or by the
operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kubediffusers.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferencePipeline"
PLURAL = "inferencepipelines"
SINGULAR = "inferencepipeline"
SHORT_NAMES = ["ipl"]

# The pattern Kubernetes uses for resource quantities ("20Gi", "500m", "1").
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# The runner's and the fetcher's own rules (kubediffusers.runner.settings), copied:
# the operator does not import the runner. tests/runner/test_settings_contract.py
# proves they agree, so a spec that passes here passes there.
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$"
REVISION_PATTERN = r"^[A-Za-z0-9_.\-/]+$"
VARIANT_PATTERN = r"^[A-Za-z0-9_\-]+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A browser origin (scheme://host[:port], no path), or * for any.
CORS_ORIGIN_PATTERN = r"^(\*|https?://[A-Za-z0-9.\-\[\]:]+)$"
ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
WEIGHT_NAME_PATTERN = r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\-/]*\.safetensors$"
SAFETY_CHECKER_ID = "CompVis/stable-diffusion-safety-checker"
MAX_LORA_SCALE = 10.0
# Image sizes compiled at warm-up, and what the runner accepts of a request's sides and pixels.
COMPILE_SIZE_PATTERN = r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
MIN_SIDE, MAX_SIDE, SIDE_STEP = 8, 8192, 8
RUNNER_MAX_PIXELS = 1536 * 1536
SIZED_TASKS = ("text-to-image", "image-to-image", "inpainting", "image-variation")


def _quantity_to_str(value: Any) -> Any:
    # Kubernetes accepts 1 and "1" alike; keep one form so comparisons are simple.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


# Sizes and compute resources are never negative: the same pattern without the sign.
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", r"^\+?", 1)


def _non_negative_quantity(value: str) -> str:
    if not re.match(NON_NEGATIVE_QUANTITY_PATTERN, value):
        raise ValueError(f"must be a non-negative quantity such as 20Gi, 500m or 2, got {value!r}")
    return value


def _positive(value: str) -> str:
    if not re.search(r"[1-9]", value.split("e")[0].split("E")[0].rstrip("numkMGTPEi")):
        raise ValueError(f"must be greater than zero, got {value!r}")
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_to_str),
    AfterValidator(_non_negative_quantity),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": NON_NEGATIVE_QUANTITY_PATTERN}], "x-kubernetes-int-or-string": True}
    ),
]
PositiveQuantity = Annotated[Quantity, AfterValidator(_positive)]


class _Model(BaseModel):
    # camelCase in YAML, snake_case in Python; unknown fields are an error so a typo
    # ("replica: 2") is reported instead of silently ignored.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Task(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    INPAINTING = "inpainting"
    IMAGE_TO_VIDEO = "image-to-video"
    UPSCALE = "upscale"
    IMAGE_VARIATION = "image-variation"
    TEXT_TO_VIDEO = "text-to-video"


class SecretKeyRef(_Model):
    """A key of a Secret in the pipeline's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret, in the pipeline's namespace.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key inside the Secret whose value is used.")


class LocalObjectReference(_Model):
    """A Secret in the pipeline's namespace, by name (a Pod's imagePullSecrets entry)."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN, description="Name of the Secret (type kubernetes.io/dockerconfigjson).")


class ModelSpec(_Model):
    """Which Hugging Face model to serve."""

    id: str = Field(min_length=1, max_length=200, pattern=MODEL_ID_PATTERN, description="Hugging Face repository id, e.g. stabilityai/sd-turbo.")
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=200,
        pattern=REVISION_PATTERN,
        description="Branch, tag or commit of the repository. The commit it resolved to is recorded in status.model.resolvedRevision.",
    )
    variant: str | None = Field(
        default=None, max_length=64, pattern=VARIANT_PATTERN, description="Weight variant to fetch and load, e.g. fp16. Unset for the default weights."
    )
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        default=None, description="Torch dtype the pipeline runs in. Unset: float16 on a GPU, float32 on a CPU."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face access token, for gated or private repositories. Only the fetch init container sees it (as HF_TOKEN).",
    )


class StorageSpec(_Model):
    """The model cache: a PersistentVolumeClaim mounted at /models."""

    size: PositiveQuantity = Field(
        default="20Gi", description="Size of the claim the operator creates (<name>-models, or each pod's own with layout PerPod). Ignored with existingClaim."
    )
    storage_class_name: str | None = Field(
        default=None, max_length=253, description="StorageClass of the claim the operator creates. Unset: the cluster's default class."
    )
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]] = Field(
        default=["ReadWriteOnce"],
        min_length=1,
        max_length=3,
        description="Access modes of the claim(s) the operator creates. Several replicas on one Shared claim need ReadWriteMany; layout PerPod works with ReadWriteOnce.",
    )
    existing_claim: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Use this existing claim (e.g. a ReadWriteMany cache shared by several pipelines) instead of creating one. The operator never deletes it.",
    )
    layout: Literal["Auto", "Shared", "PerPod"] = Field(
        default="Auto",
        description=(
            "Shared: every pod mounts one claim (<name>-models or existingClaim); more than one replica needs it ReadWriteMany. "
            "PerPod: each pod gets its own claim (a generic ephemeral volume, made and deleted with the pod), so any number of replicas "
            "runs on ReadWriteOnce storage, each fetching the model once when it starts. "
            "Auto: PerPod when the claim would be single-node and the pipeline can have more than one replica "
            "(spec.replicas, or autoscaling.maxReplicas, above 1); Shared otherwise. status.storage.layout says which is in use."
        ),
    )
    delete_policy: Literal["Delete", "Retain"] = Field(
        default="Delete",
        description=(
            "Fate of the claim the operator creates when the pipeline is deleted. Delete: it goes with the pipeline (owner reference). "
            "Retain: it is kept, and a pipeline created again under the same name reuses the cached model. "
            "Per-pod volumes (layout PerPod) always go with their pod."
        ),
    )

    @model_validator(mode="after")
    def _per_pod_needs_own_claims(self) -> StorageSpec:
        if self.layout == "PerPod" and self.existing_claim:
            raise ValueError("storage.layout PerPod gives each pod a claim of its own; it cannot be combined with storage.existingClaim")
        return self

    @model_validator(mode="after")
    def _read_write_once_pod_alone(self) -> StorageSpec:
        if "ReadWriteOncePod" in self.access_modes and len(set(self.access_modes)) > 1:
            raise ValueError("storage.accessModes: ReadWriteOncePod cannot be combined with other access modes (the API server rejects the claim)")
        return self


class ResourceRequirements(_Model):
    """Compute resources of the runner container."""

    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits, e.g. {nvidia.com/gpu: 1, memory: 16Gi}.")
    requests: dict[str, Quantity] | None = Field(default=None, description="Resource requests, e.g. {cpu: 2, memory: 12Gi}.")


def _default_fetch_resources() -> ResourceRequirements:
    return ResourceRequirements(requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "2Gi"})


class Toleration(_Model):
    """A toleration, as in a Pod spec."""

    key: str | None = Field(default=None, max_length=317, description="Taint key the toleration applies to. Empty with operator Exists: all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (the default).")
    value: str | None = Field(default=None, max_length=63, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect to match. Unset: all effects.")
    toleration_seconds: int | None = Field(default=None, description="With effect NoExecute: how long the pod stays bound after the taint appears.")


class RunnerLimits(_Model):
    """Per-request limits enforced by the runner. Unset: the runner's defaults."""

    max_pixels: int | None = Field(
        default=None, ge=64 * 64, le=4096 * 4096, description="Largest width*height a request may ask for (runner default 1536*1536)."
    )
    max_steps: int | None = Field(default=None, ge=1, le=1000, description="Largest num_inference_steps a request may ask for (runner default 150).")
    max_images_per_request: int | None = Field(default=None, ge=1, le=64, description="Largest num_images_per_prompt (runner default 4).")
    max_upload_bytes: int | None = Field(
        default=None, ge=1024, le=1024**3, description="Largest request body in bytes; larger gets 413 (runner default 20 MiB)."
    )
    max_video_frames: int | None = Field(
        default=None, ge=1, le=1000, description="Largest num_frames of a video request (runner default 25; Wan's own length is 81, LTX-Video's 161)."
    )


class EnvVar(_Model):
    """An extra environment variable for the runner container."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class CompileSpec(_Model):
    """torch.compile of the denoiser, the VAE decoder and the text encoders, done during warm-up (before the pod is ready)."""

    unet: bool = Field(default=False, description="Compile the UNet/transformer: the largest speed-up, minutes of compile at start.")
    vae: bool = Field(default=False, description="Compile the VAE decoder.")
    text_encoder: bool = Field(
        default=False,
        description=(
            "Compile the text encoders, for prompts the prompt cache does not hold (a GPU's eager text encoder is launch-bound: "
            "milliseconds a call). Not with textEncoderOffload."
        ),
    )
    mode: Literal["default", "reduce-overhead", "max-autotune"] = Field(
        default="default", description="torch.compile mode; reduce-overhead and max-autotune use CUDA graphs."
    )
    regional: bool = Field(
        default=True,
        description="Compile a transformer's repeated blocks once each (regional compilation: a shorter cold start) instead of the whole model; UNets compile whole.",
    )
    batch_sizes: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            "Batch sizes compiled at warm-up, increasing; every call is padded up to one (or split), so none compiles in the request path. "
            "Unset: 1, 2, 4, ... up to the largest call (maxBatchSize, or limits.maxImagesPerRequest when larger)."
        ),
    )
    sizes: list[Annotated[str, Field(max_length=11, pattern=COMPILE_SIZE_PATTERN)]] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            'Image sizes compiled at warm-up, "WIDTHxHEIGHT" (e.g. ["512x512", "768x512"]), each at every batch size with and without guidance; '
            "once ready nothing compiles: a request at another size runs uncompiled (slower) and is counted in kubediffusers_uncompiled_calls_total. "
            "Sides are multiples of the checkpoint's size step (8; 16 for FLUX and SD3, checked when the model loads), within limits.maxPixels. "
            "Unset: the checkpoint's default size. Text-to-image, image-to-image, inpainting and image-variation only."
        ),
    )


class OptimizationsSpec(_Model):
    """Speed and memory options of the runner; all off by default except SDPA attention."""

    attention: Literal["sdpa", "default"] = Field(default="sdpa", description="sdpa: PyTorch's fused attention kernels; default: the checkpoint's own.")
    channels_last: bool = Field(default=False, description="Run the UNet and VAE in channels_last memory format.")
    fuse_qkv: bool = Field(default=False, description="Fuse attention QKV projections into one matmul.")
    compile: CompileSpec = Field(default_factory=CompileSpec, description="torch.compile options; compiled kernels are cached on the model claim.")
    deepcache_interval: int = Field(
        default=0,
        ge=0,
        le=10,
        description="UNet feature reuse (the DeepCache method, written in the runner): reuse high-level UNet features for this many steps (0 off; 2-3 for multi-step models; transformer checkpoints refuse it).",
    )
    tiny_vae_id: str | None = Field(
        default=None,
        max_length=200,
        pattern=MODEL_ID_PATTERN,
        description="Repository of a tiny autoencoder decoding in place of the VAE (e.g. madebyollin/taesd, madebyollin/taesdxl); fetched with the model.",
    )
    prompt_cache_size: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Prompt embeddings kept (LRU) so a repeated prompt skips the text encoders (SD and SDXL); 0 turns it off (runner default 64).",
    )
    vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time (less GPU memory).")
    vae_tiling: bool = Field(default=False, description="Decode large images in tiles (less GPU memory).")
    cpu_offload: Literal["none", "model", "sequential"] = Field(
        default="none", description="Keep components in CPU memory until used, for small GPUs; cannot be combined with compile."
    )
    text_encoder_offload: bool = Field(
        default=False,
        description="Keep the text encoders (T5-XXL, Qwen, UMT5) in CPU memory, streamed to the GPU layer by layer as they run; the rest stays on the GPU. Not with cpuOffload.",
    )
    transformer_cache: Literal["none", "first-block", "taylorseer"] = Field(
        default="none",
        description="diffusers' step cache for transformer checkpoints (first-block or taylorseer); refused at start-up where it does not apply.",
    )

    @model_validator(mode="after")
    def _offload_excludes_compile(self) -> OptimizationsSpec:
        if self.cpu_offload != "none" and (self.compile.unet or self.compile.vae or self.compile.text_encoder):
            raise ValueError("optimizations.cpuOffload cannot be combined with optimizations.compile")
        if self.text_encoder_offload and self.compile.text_encoder:
            raise ValueError(
                "optimizations.compile.textEncoder cannot be combined with optimizations.textEncoderOffload, which streams the text encoders from CPU memory"
            )
        if self.cpu_offload != "none" and self.text_encoder_offload:
            raise ValueError("optimizations.textEncoderOffload cannot be combined with optimizations.cpuOffload, which offloads the text encoders already")
        return self


class SafetyCheckerSpec(_Model):
    """A CLIP safety checker run on every generated image (livepeer's safety_check): real nsfw flags for every model."""

    enabled: bool = Field(default=False, description="Fetch and run the safety checker; requests may skip it with safety_check: false.")
    model_id: str = Field(
        default=SAFETY_CHECKER_ID,
        max_length=200,
        pattern=MODEL_ID_PATTERN,
        description="Repository of a diffusers StableDiffusionSafetyChecker (safetensors weights); fetched at main with the model.",
    )
    policy: Literal["flag", "blank"] = Field(
        default="flag", description="flag: report nsfw: true and return the image; blank: also return a black image (every frame of a flagged video)."
    )


class RunnerSpec(_Model):
    """The runner container: image, queue, batching, optimizations and limits."""

    image: str | None = Field(
        default=None, max_length=512, description="Runner image (also runs the fetch init container). Unset: the operator's configured default."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level of the runner and the fetcher.")
    max_queue_size: int | None = Field(
        default=None, ge=1, le=10_000, description="Requests that may wait beyond the running one; more get 503 (runner default 16)."
    )
    request_timeout_seconds: float | None = Field(default=None, gt=0, le=86_400, description="A request not done by then gets 504 (runner default 300).")
    drain_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description=(
            "After SIGTERM, how long the runner may take to finish running and queued work (new work gets 503) before failing the rest; "
            "the pod's grace period follows. Unset: the request timeout."
        ),
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Most images one pipeline call generates by merging compatible queued requests (runner default 1: no batching).",
    )
    batch_window_ms: float | None = Field(
        default=None, ge=0, le=10_000, description="How long the runner waits for compatible requests to fill a batch (runner default 0)."
    )
    compatibility: Literal["none", "livepeer"] = Field(
        default="none",
        description=(
            "livepeer: answer go-livepeer's client as livepeer ai-runner does (only the statuses its spec declares: 500 for queue full, "
            "not ready, out of memory and timeout; its defaults). none: the native 503/504 with Retry-After."
        ),
    )
    cors_allowed_origins: list[Annotated[str, Field(max_length=253, pattern=CORS_ORIGIN_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description='Origins browsers may call the runner from (CORS), e.g. ["https://app.example"], or ["*"] for any; empty: CORS off.',
    )
    output_format: Literal["png", "jpeg", "webp"] | None = Field(
        default=None,
        description="Image encoding when a request names none (output_format or Accept): png (lossless, fast level), jpeg or webp (runner default png).",
    )
    output_quality: int | None = Field(default=None, ge=1, le=100, description="JPEG/WebP quality when a request names none (runner default 90).")
    shared_jobs: bool | None = Field(
        default=None,
        description=(
            "Keep async jobs (state, results, cancel requests) as files on the model claim, so every replica answers GET /jobs/{id}, "
            "its result and DELETE. Unset: on when storage layout is Shared on a ReadWriteMany claim, off otherwise (jobs in each pod's "
            "memory: use service.sessionAffinity). true on a Shared ReadWriteOnce claim keeps results across restarts; "
            "it cannot be combined with layout PerPod."
        ),
    )
    optimizations: OptimizationsSpec = Field(default_factory=OptimizationsSpec, description="Speed and memory options.")
    safety_checker: SafetyCheckerSpec = Field(default_factory=SafetyCheckerSpec, description="The safety checker (off by default).")
    limits: RunnerLimits = Field(default_factory=RunnerLimits, description="Per-request limits.")
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a bearer token; when set, inference routes need 'Authorization: Bearer <token>'."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables for the runner container; they replace operator-built ones of the same name (e.g. KUBEDIFFUSERS_DEVICE).",
    )

    @model_validator(mode="after")
    def _compile_batch_sizes_fit(self) -> RunnerSpec:
        # The runner refuses these at start-up too (settings.RunnerSettings); here they are a Valid=False condition instead of a crash loop.
        sizes = self.optimizations.compile.batch_sizes
        if sizes is None:
            return self
        if sizes != sorted(set(sizes)):
            raise ValueError(f"optimizations.compile.batchSizes must be increasing without repeats, got {sizes}")
        largest = max(self.max_batch_size or 1, self.limits.max_images_per_request or 4)
        if sizes[-1] > largest:
            raise ValueError(
                f"optimizations.compile.batchSizes: {sizes[-1]} is more images than one call ever has (maxBatchSize, limits.maxImagesPerRequest: {largest})"
            )
        return self

    @model_validator(mode="after")
    def _compile_sizes_fit(self) -> RunnerSpec:
        # The runner's rules (settings.RunnerSettings._check_compile_sizes); the checkpoint's own step is the runner's to check.
        sizes = self.optimizations.compile.sizes
        if sizes is None:
            return self
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"optimizations.compile.sizes must not repeat a size, got {sizes}")
        limit = self.limits.max_pixels or RUNNER_MAX_PIXELS
        for text in sizes:
            width, height = (int(side) for side in text.split("x"))
            if not all(MIN_SIDE <= side <= MAX_SIDE and side % SIDE_STEP == 0 for side in (width, height)):
                raise ValueError(f"optimizations.compile.sizes: {text}: sides must be multiples of {SIDE_STEP} from {MIN_SIDE} to {MAX_SIDE}")
            if width * height > limit:
                raise ValueError(
                    f"optimizations.compile.sizes: {text} is {width * height} pixels, more than limits.maxPixels {limit}: no request has that size"
                )
        return self


class NetworkPolicySpec(_Model):
    """A NetworkPolicy on the runner pods that admits only chosen namespaces (and pods) to the HTTP port."""

    enabled: bool = Field(default=False, description="Create the NetworkPolicy. Turned off again, it is kept but selects no pod.")
    allowed_namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Namespaces whose pods may connect to the runner's port 8000 (matched by their kubernetes.io/metadata.name label). "
            "Empty: only the pipeline's own namespace. Given: exactly these (add the pipeline's own namespace if it needs access)."
        ),
    )
    allowed_pod_labels: dict[str, str] | None = Field(
        default=None, description="When set, only pods carrying all these labels, in the allowed namespaces, may connect."
    )


class ServiceSpec(_Model):
    """The Service in front of the runner pods."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Service type.")
    port: int = Field(default=80, ge=1, le=65535, description="Service port; it forwards to the runner's port 8000 (named http).")
    session_affinity: Literal["None", "ClientIP"] = Field(
        default="None",
        description=(
            "ClientIP: the Service sends each client to the same runner pod, so that with several replicas an async job "
            "(POST ...?async=true, then GET /jobs/{id}) is polled on the pod that holds it. Behind an ingress or gateway the "
            "client is the proxy: then all its traffic goes to one pod."
        ),
    )
    session_affinity_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86_400,
        description="With sessionAffinity ClientIP: seconds a client sticks to its pod after its last request (Kubernetes default 10800).",
    )

    @model_validator(mode="after")
    def _timeout_needs_client_ip(self) -> ServiceSpec:
        if self.session_affinity_timeout_seconds is not None and self.session_affinity != "ClientIP":
            raise ValueError("service.sessionAffinityTimeoutSeconds needs service.sessionAffinity: ClientIP")
        return self


class AutoscalingSpec(_Model):
    """Replicas follow the load: a KEDA ScaledObject (and, with minReplicas 0, the KEDA HTTP add-on) sets spec.replicas."""

    min_replicas: int = Field(
        default=1,
        ge=0,
        le=100,
        description=(
            "Fewest replicas. 0: idle pipelines scale to zero, and requests that arrive then are held by the KEDA HTTP add-on's "
            "interceptor until a replica is ready (the Service becomes an ExternalName to the interceptor; see docs/scaling.md)."
        ),
    )
    max_replicas: int = Field(ge=1, le=100, description="Most replicas.")
    target_queue_depth: float = Field(
        default=2,
        gt=0,
        le=10_000,
        description="Queued requests per replica the autoscaler aims for (replicas = ceil(sum of queue depths / this)); see docs/scaling.md per family.",
    )
    target_in_flight: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Also scale on requests running plus queued per replica (unset: queue depth only); the larger of the two answers wins.",
    )
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=3600, description="Scale down only to the highest replica count wanted over this window (HPA behavior)."
    )
    polling_interval_seconds: int = Field(default=15, ge=1, le=3600, description="How often KEDA evaluates the query.")
    cooldown_seconds: int = Field(
        default=300, ge=0, le=86_400, description="With minReplicas 0: idle time after the last request before going to zero (KEDA cooldownPeriod)."
    )
    cold_start_timeout_seconds: int = Field(
        default=1800,
        ge=10,
        le=86_400,
        description="With minReplicas 0: how long the interceptor holds a request while a replica starts (download if not cached, load, warm-up).",
    )
    prometheus_address: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^https?://[^\s]+$",
        description="Prometheus server that scrapes the runner pods, e.g. http://prometheus.monitoring:9090. Unset: the operator's setting (chart value autoscaling.prometheusAddress).",
    )
    hosts: list[Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]] = Field(
        default_factory=list,
        max_length=16,
        description="With minReplicas 0: extra Host names the interceptor routes to this pipeline (an Ingress host); the Service's own names are always routed.",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"autoscaling.minReplicas ({self.min_replicas}) must not exceed autoscaling.maxReplicas ({self.max_replicas})")
        return self


class LoraSpec(_Model):
    """A LoRA adapter fetched with the model and loaded at start-up; requests apply it by name or id (livepeer's loras)."""

    name: str = Field(pattern=ADAPTER_NAME_PATTERN, description="The adapter's name, unique in the pipeline; requests may name it or its id.")
    id: str = Field(min_length=1, max_length=200, pattern=MODEL_ID_PATTERN, description="Hugging Face repository id of the adapter.")
    revision: str = Field(default="main", min_length=1, max_length=200, pattern=REVISION_PATTERN, description="Branch, tag or commit of the repository.")
    weight_name: str | None = Field(
        default=None,
        max_length=255,
        pattern=WEIGHT_NAME_PATTERN,
        description="The .safetensors file in the repository (only it is fetched). Unset: the repository's root safetensors.",
    )
    scale: float = Field(default=1.0, ge=0, le=MAX_LORA_SCALE, description="The weight used when a request names the adapter with null.")

    @model_validator(mode="after")
    def _inside_the_repository(self) -> LoraSpec:
        if self.weight_name is not None and ".." in self.weight_name.split("/"):
            raise ValueError("weightName must be a path inside the repository")
        return self


class InferencePipelineSpec(_Model):
    """Desired state: one task served by one model, cached on a volume, behind a Service."""

    task: Task = Field(description="The one task the runner serves; only its route exists.")
    model: ModelSpec = Field(description="The Hugging Face model to fetch and serve.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Where the model is cached.")
    replicas: int = Field(default=1, ge=0, le=100, description="Number of runner pods. Also set by `kubectl scale` and HorizontalPodAutoscalers.")
    resources: ResourceRequirements | None = Field(
        default=None, description="Compute resources of the runner container, e.g. {limits: {nvidia.com/gpu: 1}}. Unset: none (the runner uses the CPU)."
    )
    fetch_resources: ResourceRequirements = Field(
        default_factory=_default_fetch_resources,
        description=(
            "Compute resources of the fetch init container (a namespace with a cpu/memory ResourceQuota rejects pods whose containers, "
            "init containers included, request none). Default: requests {cpu: 250m, memory: 512Mi}, limits {cpu: 1, memory: 2Gi}."
        ),
    )
    rollout_strategy: Literal["Auto", "Recreate", "RollingUpdate"] = Field(
        default="Auto",
        description=(
            "How a spec change replaces the pods. Auto: RollingUpdate (one extra pod at a time) only on a ReadWriteMany claim or with storage "
            "layout PerPod (each new pod brings its own volume), else Recreate: on a ReadWriteOnce or ReadWriteOncePod claim the new pod "
            "could not mount the claim (or would need a second GPU) while the old one runs."
        ),
    )
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pods must match, as in a Pod spec.")
    tolerations: list[Toleration] | None = Field(default=None, description="Tolerations of the pods, as in a Pod spec (e.g. for tainted GPU nodes).")
    affinity: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="Affinity of the pods (core/v1 Affinity), passed through as is.",
    )
    runtime_class_name: str | None = Field(default=None, max_length=253, description="RuntimeClass of the pods (e.g. nvidia).")
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass of the pods.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None,
        max_length=16,
        description=(
            "Secrets for pulling the runner image from a private registry, as in a Pod spec ([{name: regcred}]). "
            "Unset: the operator's default (the chart's runner.imagePullSecrets); [] for none."
        ),
    )
    runner: RunnerSpec = Field(default_factory=RunnerSpec, description="The runner container.")
    loras: list[LoraSpec] = Field(
        default_factory=list,
        max_length=16,
        description="LoRA adapters (safetensors) fetched with the model and loaded at start-up; each request picks up to 4 with weights.",
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service in front of the pods.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="Who may reach the runner pods (needs a network plugin that enforces NetworkPolicy)."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Scale on load with KEDA (a ScaledObject that sets spec.replicas). Unset: spec.replicas, set by hand or kubectl scale."
    )

    @model_validator(mode="after")
    def _scale_to_zero_needs_cluster_ip(self) -> InferencePipelineSpec:
        if self.autoscaling is not None and self.autoscaling.min_replicas == 0 and self.service.type != "ClusterIP":
            raise ValueError(
                "autoscaling.minReplicas 0 routes requests through the KEDA HTTP interceptor (the Service becomes an ExternalName), "
                f"so service.type must be ClusterIP, not {self.service.type}: expose the interceptor instead"
            )
        return self

    def most_replicas(self) -> int:
        """The most replicas this spec can run: what the storage layout must serve."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas

    @model_validator(mode="after")
    def _compile_sizes_need_a_sized_task(self) -> InferencePipelineSpec:
        if self.runner.optimizations.compile.sizes is not None and self.task not in SIZED_TASKS:
            raise ValueError(f"runner.optimizations.compile.sizes applies to {', '.join(SIZED_TASKS)}, not {self.task}")
        return self

    @model_validator(mode="after")
    def _adapters_consistent(self) -> InferencePipelineSpec:
        names = [lora.name for lora in self.loras]
        if len(set(names)) != len(names):
            raise ValueError(f"loras: adapter names must be unique, got {names}")
        if self.loras and self.runner.optimizations.fuse_qkv:
            raise ValueError("loras cannot be combined with runner.optimizations.fuseQkv (fused projections bypass the adapters)")
        return self


# ---- status (written by the operator; modelled here so the CRD schema is generated too)


class Phase(StrEnum):
    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Condition(_Model):
    """One aspect of the pipeline's state, as in other Kubernetes objects."""

    type: str = Field(description="Valid, ModelCached, Available, StorageReady or Autoscaling.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.")
    message: str = Field(default="", description="What a person should know, in a sentence.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation the condition was computed from.")


class ModelStatus(_Model):
    """What was fetched."""

    resolved_revision: str | None = Field(default=None, description="Commit the requested revision resolved to when fetched.")


class StorageStatus(_Model):
    """Where the model is cached."""

    layout: Literal["Shared", "PerPod"] | None = Field(default=None, description="Shared (one claim for all pods) or PerPod (a claim per pod).")
    claim: str | None = Field(default=None, description="The shared claim's name (layout Shared).")
    cached_replicas: int | None = Field(default=None, description="Runner pods of the current spec whose model is in their cache.")
    shared_jobs: bool | None = Field(
        default=None,
        description="Whether the runner keeps async jobs on the shared claim, so that any replica answers GET /jobs/{id} (spec.runner.sharedJobs, or its default).",
    )


class AutoscalingStatus(_Model):
    """What drives spec.replicas."""

    scaled_object: str | None = Field(default=None, description="Name of the KEDA ScaledObject that sets spec.replicas.")
    http_scaled_object: str | None = Field(default=None, description="Name of the HTTPScaledObject routing requests through the interceptor (minReplicas 0).")
    query: str | None = Field(default=None, description="The Prometheus query the ScaledObject scales on.")


class InferencePipelineStatus(_Model):
    """Observed state, written by the operator."""

    phase: Phase | None = Field(default=None, description="Pending, Downloading, Loading, Ready, Degraded or Failed.")
    reason: str | None = Field(default=None, description="Why the pipeline is in this phase, in one CamelCase word (the Reason column).")
    message: str | None = Field(default=None, description="Why the pipeline is in this phase.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Valid, ModelCached, Available, StorageReady and (with spec.autoscaling) Autoscaling conditions."
    )
    observed_generation: int | None = Field(default=None, description="metadata.generation this status was computed from.")
    replicas: int | None = Field(default=None, description="Runner pods that exist (for the scale subresource).")
    ready_replicas: int | None = Field(default=None, description="Runner pods that answer /readyz.")
    selector: str | None = Field(default=None, description="Label selector of the runner pods (for the scale subresource and HPAs).")
    url: str | None = Field(default=None, description="Cluster URL of the Service, http://<name>.<namespace>.svc.cluster.local:<port>.")
    model: ModelStatus | None = Field(default=None, description="What was fetched.")
    storage: StorageStatus | None = Field(
        default=None, description="The storage layout in use, how many replicas have the model cached, and whether async jobs are shared."
    )
    autoscaling: AutoscalingStatus | None = Field(default=None, description="The KEDA objects that scale the pipeline (when spec.autoscaling is set).")


# ---- parsing


class SpecError(ValueError):
    """The spec does not parse: one line per problem, with the field path."""


def describe_validation_error(exc: ValidationError, prefix: str = "spec") -> str:
    parts = []
    for err in exc.errors():
        path = ".".join([prefix, *(str(p) for p in err["loc"])])
        parts.append(f"{path}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(raw: Any) -> InferencePipelineSpec:
    if raw is not None and not isinstance(raw, Mapping):
        # An old CRD (or none) let anything through; dict("...") would raise a bare ValueError.
        raise SpecError(f"spec: must be an object, got {type(raw).__name__}")
    try:
        return InferencePipelineSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc)) from None


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", name) is not None
