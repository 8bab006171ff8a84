"""Which files of a repository the fetcher downloads.

Pure functions over the repository's file listing (and its ``model_index.json``),
so that they can be tested without any network. The rules mimic what diffusers'
``DiffusionPipeline.download`` would fetch with ``use_safetensors=True`` and the
given ``variant``, minus everything the runner never loads:

* ``model_index.json`` and, for every component folder it names (``unet``,
  ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``, ...), the small
  configuration and tokenizer files in it (``*.json``, ``*.txt``, ``*.model``,
  ``*.tiktoken``).
* Per component, the safetensors weights: with a variant (e.g. ``fp16``) the
  component's ``*.fp16.safetensors`` (and sharded/legacy spellings plus their
  index) when it has them, otherwise its default ``*.safetensors``; without a
  variant only the default, non-variant ``*.safetensors``.
* Never pickled or foreign formats (``.bin``, ``.ckpt``, ``.pt``, ``.pth``,
  ``.onnx``, ``.pb``, ``.msgpack``, ``.h5``, ``.gguf``...), never root-level
  single-file checkpoints, never folders the pipeline does not name.

A repository without ``model_index.json`` (a single model, e.g. a VAE) is treated
as one component at the root.

Overrides: ``allow_patterns`` replaces the selection above (fnmatch patterns, the
same semantics as ``snapshot_download``), ``ignore_patterns`` replaces the list
of forbidden formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import EXIT_NO_WEIGHTS, FetchError

MODEL_INDEX = "model_index.json"

#: Formats the runner never loads (it loads safetensors only and runs no remote code).
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    "*.bin",
    "*.ckpt",
    "*.pt",
    "*.pth",
    "*.pkl",
    "*.pickle",
    "*.onnx",
    "*.onnx_data",
    "*.pb",
    "*.msgpack",
    "*.h5",
    "*.gguf",
    "*.flashpack",
    "*.py",
    "*.tflite",
    "*.mlmodel",
    "*.mlpackage/*",
    "*.engine",
    "*.plan",
    "*.ot",
)

#: Non-weight files kept in a component folder: configurations and tokenizer files.
AUX_SUFFIXES: tuple[str, ...] = (".json", ".txt", ".model", ".tiktoken")

_SHARD = r"-\d{5}-of-\d{5}"


@dataclass(frozen=True)
class Selection:
    files: tuple[str, ...]
    #: components whose requested variant was missing, so their default weights were taken
    fallback_components: tuple[str, ...] = ()
    #: files of the listing left out, for logging
    excluded: tuple[str, ...] = field(default=(), repr=False)


def pipeline_folders(model_index: Mapping[str, object]) -> set[str]:
    """Component folder names a diffusers ``model_index.json`` declares (same rule as diffusers).

    An entry ``[null, null]`` (e.g. ``safety_checker`` in SD 1.x repositories saved without one) is a
    component diffusers sets to None and never loads, so its folder is not fetched.
    """
    return {
        key
        for key, value in model_index.items()
        if not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2 and any(v is not None for v in value)
    }


def _weight_kind(name: str, variant: str | None) -> str | None:
    """Classify a file's base name: "default" or "variant" safetensors (or their index), else None."""
    if re.fullmatch(rf"[^.]+({_SHARD})?\.safetensors", name) or re.fullmatch(r"[^.]+\.safetensors\.index\.json", name):
        return "default"
    if variant is not None:
        v = re.escape(variant)
        if (
            re.fullmatch(rf"[^.]+\.{v}({_SHARD})?\.safetensors", name)
            or re.fullmatch(rf"[^.]+{_SHARD}\.{v}\.safetensors", name)  # legacy spelling
            or re.fullmatch(rf"[^.]+\.safetensors\.index\.{v}\.json", name)
            or re.fullmatch(rf"[^.]+\.safetensors\.{v}\.index\.json", name)  # legacy spelling
        ):
            return "variant"
    return None


def _is_weights(name: str) -> bool:
    """Weights or a weights index of any variant (``x.safetensors``, ``x.fp16.safetensors``, ``x.safetensors.index.json``...)."""
    return ".safetensors" in name


def select_files(
    listing: Iterable[str],
    *,
    model_index: Mapping[str, object] | None,
    variant: str | None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
) -> Selection:
    """Choose the files to download from a repository's file listing.

    Raises :class:`FetchError` when nothing loadable is left (no safetensors, or
    the variant exists in no component), so the pod fails with a clear reason
    instead of the runner failing later.
    """
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(set(listing))
    ignore = list(DEFAULT_IGNORE_PATTERNS if ignore_patterns is None else ignore_patterns)
    allowed = list(filter_repo_objects(files, ignore_patterns=ignore or None))

    if allow_patterns is not None:
        chosen = sorted(filter_repo_objects(allowed, allow_patterns=list(allow_patterns)))
        if not chosen:
            raise FetchError(
                "NoMatchingFiles",
                f"no file of the repository matches the allow patterns {list(allow_patterns)}" + (f" (after ignoring {ignore})" if ignore else ""),
                EXIT_NO_WEIGHTS,
            )
        return Selection(files=tuple(chosen), excluded=tuple(f for f in files if f not in set(chosen)))

    # Group the candidate files by component: a folder named in model_index.json,
    # or the root for a repository that is a single model.
    components: dict[str, list[str]] = {}
    chosen_set: set[str] = set()
    if model_index is not None:
        if MODEL_INDEX in allowed:
            chosen_set.add(MODEL_INDEX)
        folders = pipeline_folders(model_index)
        for path in allowed:
            head, _, rest = path.partition("/")
            if rest and head in folders:
                components.setdefault(head, []).append(path)
    else:
        for path in allowed:
            if "/" not in path:
                components.setdefault("", []).append(path)

    fallback: list[str] = []
    any_variant = False
    any_weights = False
    for component, paths in sorted(components.items()):
        default_w, variant_w = [], []
        for path in paths:
            name = path.rsplit("/", 1)[-1]
            kind = _weight_kind(name, variant)
            if kind == "default":
                default_w.append(path)
            elif kind == "variant":
                variant_w.append(path)
            elif not _is_weights(name) and name.endswith(AUX_SUFFIXES) and not name.startswith("."):
                chosen_set.add(path)
            # anything else (other variants such as .ema/.fp32, unknown formats) is left out
        if variant is not None and variant_w:
            chosen_set.update(variant_w)
            any_variant = True
            any_weights = True
        elif default_w:
            chosen_set.update(default_w)
            any_weights = True
            if variant is not None:
                fallback.append(component or "<root>")

    if variant is not None and not any_variant:
        raise FetchError(
            "VariantNotFound",
            f"no component of the repository has {variant!r} safetensors weights; unset spec.model.variant or choose a variant the repository provides",
            EXIT_NO_WEIGHTS,
        )
    # A component whose folder holds weights in forbidden formats only cannot be loaded safely.
    for component in sorted(components):
        if component == "":
            continue
        has_any_weights = any(re.search(r"\.(bin|ckpt|pt|pth|onnx|msgpack|h5)$", p) for p in files if p.startswith(component + "/"))
        has_safetensors = any(p.startswith(component + "/") and p.endswith(".safetensors") for p in chosen_set)
        if has_any_weights and not has_safetensors:
            raise FetchError(
                "NoSafetensors",
                f"component {component!r} has no safetensors weights (only pickled or foreign formats); the runner loads safetensors only",
                EXIT_NO_WEIGHTS,
            )
    if not any_weights:
        raise FetchError(
            "NoSafetensors",
            "the repository has no safetensors weights the runner could load"
            + (" (no model_index.json and no weights at its root)" if model_index is None else ""),
            EXIT_NO_WEIGHTS,
        )
    return Selection(
        files=tuple(sorted(chosen_set)),
        fallback_components=tuple(fallback),
        excluded=tuple(f for f in files if f not in chosen_set),
    )


def exact_patterns(files: Iterable[str]) -> list[str]:
    """fnmatch patterns matching exactly these paths (``[``, ``*`` and ``?`` escaped)."""
    return [re.sub(r"([*?\[])", r"[\1]", f) for f in files]
