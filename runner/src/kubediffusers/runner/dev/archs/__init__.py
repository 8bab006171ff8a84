"""Real-size architectures with random weights, from configs shipped here.

Each folder beside this file is a diffusers checkpoint without weights: the
``model_index.json`` and every component's ``config.json`` of a published
model (sd-turbo, SD 1.5, SDXL base, SVD-XT, Wan 2.1 T2V 1.3B, LTX-Video), as on the Hub. Building them with
random weights gives the same compute as the real checkpoints (layer shapes,
sequence lengths, attention heads), so GPU speed can be measured on a machine
that cannot reach the Hub. ``tiny-sd`` and ``tiny-flux`` are the SD and
FLUX.1-schnell shapes at toy size, so the same code runs on a CPU in seconds.

The tokenizer is generated (see :func:`kubediffusers.runner.dev.tiny._tiny_tokenizer`):
prompts are padded to 77 tokens, so compute does not depend on its vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHS_DIR = Path(__file__).resolve().parent
RANDOM_ORG = "kubediffusers"

# What each shipped architecture copies, for people reading benchmark figures.
SOURCES: dict[str, str] = {
    "sd-turbo": "stabilityai/sd-turbo (SD 2.1 base architecture)",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "svd": "stabilityai/stable-video-diffusion-img2vid-xt",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
    "sd35-medium": "stabilityai/stable-diffusion-3.5-medium (MMDiT-X)",
    "wan-t2v-1.3b": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    "ltx-video": "Lightricks/LTX-Video (0.9.0)",
    "tiny-sd": "SD shape at toy size (CPU tests)",
    "tiny-flux": "FLUX.1-schnell shape at toy size (CPU tests)",
}


def architectures() -> list[str]:
    """Names of the shipped architectures (folders holding a model_index.json)."""
    return sorted(p.parent.name for p in ARCHS_DIR.glob("*/model_index.json"))


def arch_folder(arch: str) -> Path:
    folder = ARCHS_DIR / arch
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"no shipped architecture {arch!r}; choose one of {', '.join(architectures())}")
    return folder


def model_index(arch: str) -> dict[str, Any]:
    return json.loads((arch_folder(arch) / "model_index.json").read_text())


def random_model_id(arch: str) -> str:
    """The cache id a saved random checkpoint gets: kubediffusers/random-<arch>."""
    arch_folder(arch)
    return f"{RANDOM_ORG}/random-{arch}"


def components_of(arch: str) -> dict[str, tuple[str | None, str | None]]:
    """component name -> (library, class name), as model_index.json lists them."""
    return {name: (value[0], value[1]) for name, value in model_index(arch).items() if not name.startswith("_") and isinstance(value, list) and len(value) == 2}


def build_component(arch: str, name: str, device: Any = "cpu", dtype: Any = None) -> Any:
    """One component with random weights, built from its shipped config.

    Models are constructed directly on ``device`` (``"meta"`` allocates nothing;
    ``"cuda"`` runs the initialisers on the GPU, seconds for SDXL), then cast to
    ``dtype``.
    """
    import torch

    library, class_name = components_of(arch)[name]
    if library is None or class_name is None:
        return None
    folder = arch_folder(arch) / name
    if library == "diffusers":
        import diffusers

        cls = getattr(diffusers, class_name)
        config = cls.load_config(folder)
        if issubclass(cls, diffusers.SchedulerMixin):
            return cls.from_config(config)
        with torch.device(device):
            model = cls.from_config(config)
    elif library == "transformers":
        import transformers

        cls = getattr(transformers, class_name)
        if "Tokenizer" in class_name:
            from kubediffusers.runner.dev.tiny import _tiny_tokenizer
            from kubediffusers.runner.dev.tiny_video import _tiny_t5_tokenizer

            # T5/UMT5 (Wan, LTX-Video): a generated SentencePiece-style vocabulary; CLIP otherwise.
            return _tiny_t5_tokenizer() if class_name.startswith(("T5", "UMT5")) else _tiny_tokenizer()
        if class_name.endswith(("ImageProcessor", "FeatureExtractor")):
            return cls.from_pretrained(folder, local_files_only=True)
        config = cls.config_class.from_pretrained(folder, local_files_only=True)
        with torch.device(device):
            model = cls(config)
    else:
        raise ValueError(f"{arch}/{name}: library {library!r} is neither diffusers nor transformers")
    model.eval()
    if dtype is not None:
        model.to(dtype)
    return model


def parameter_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def build_random_pipeline(arch: str, dtype: Any = None, device: Any = "cpu", seed: int = 0) -> Any:
    """The diffusers pipeline of ``arch`` with random weights on ``device``."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    index = model_index(arch)
    pipeline_cls = getattr(diffusers, index["_class_name"])
    kwargs: dict[str, Any] = {name: build_component(arch, name, device, dtype) for name in components_of(arch)}
    # Plain settings recorded in model_index.json (requires_safety_checker, force_zeros_for_empty_prompt).
    kwargs.update({k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)})
    import inspect

    accepted = inspect.signature(pipeline_cls.__init__).parameters
    return pipeline_cls(**{k: v for k, v in kwargs.items() if k in accepted})


def save_random_checkpoint(arch: str, model_dir: Path, dtype: Any = None, device: Any = None) -> Path:
    """Write ``arch`` with random weights into the Hugging Face cache at
    ``model_dir`` as :func:`random_model_id` (``refs/main`` and a snapshot),
    unless it is already there; return the snapshot folder.

    Built on the GPU when there is one (fast initialisers); weights are saved
    as safetensors in ``dtype`` (default: the family's GPU dtype for real sizes,
    float16 or bfloat16 as ``families.FAMILIES`` says; float32 for the tiny
    architectures, which run on CPUs).
    """
    import torch

    from kubediffusers.runner.dev.tiny import _ensure_snapshot
    from kubediffusers.runner.fetch.marker import repo_folder

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        from kubediffusers.runner.families import family_of

        family = family_of(arch_folder(arch))
        dtype = torch.float32 if arch.startswith("tiny") else getattr(torch, family.gpu_dtype if family else "float16")

    def build(folder: Path) -> None:
        pipe = build_random_pipeline(arch, dtype=dtype, device=device)
        pipe.save_pretrained(folder, safe_serialization=True)
        del pipe
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    return _ensure_snapshot(repo_folder(Path(model_dir), random_model_id(arch)), "main", build)
