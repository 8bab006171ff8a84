"""Tiny random-weight checkpoints, built locally, for tests and `make run`.

They use the real architectures at toy sizes and are written with
``save_pretrained`` into a Hugging Face cache layout
(``models--org--name/snapshots/<commit>/`` plus ``refs/<revision>``), so the
runner loads them through exactly the code path a fetched checkpoint takes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubediffusers.runner.settings import Task

TINY_ORG = "kubediffusers"
# Bumped whenever the tiny architectures change, so stale caches are rebuilt.
TINY_FORMAT_VERSION = "1"


def tiny_model_id(task: Task | str) -> str:
    return f"{TINY_ORG}/tiny-{Task(task).value}"


def repo_cache_dir(model_dir: Path, model_id: str) -> Path:
    """The Hub cache folder of a repository (huggingface_hub's naming)."""
    return model_dir / ("models--" + model_id.replace("/", "--"))


def _byte_level_alphabet() -> list[str]:
    # CLIP's byte-to-unicode table: every byte gets a printable character.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tiny_tokenizer() -> Any:
    """A CLIP BPE tokenizer over a generated vocabulary: every byte alone and
    as a word end, plus merges of the most common English letter pairs."""
    from transformers import CLIPTokenizer

    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = [("t", "h"), ("h", "e</w>"), ("i", "n"), ("e", "r"), ("a", "n"), ("r", "e"), ("o", "n</w>"), ("a", "t")]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vocab_file.write_text(json.dumps(vocab))
        merges_file.write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
        return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)


def _clip_text_config(**extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=77,
        **extra,
    )


def _tiny_unet(**extra: Any) -> Any:
    from diffusers import UNet2DConditionModel

    kwargs: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    kwargs.update(extra)
    return UNet2DConditionModel(**kwargs)


def _tiny_vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    kwargs: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    kwargs.update(extra)
    return AutoencoderKL(**kwargs)


def _stable_diffusion_components() -> dict[str, Any]:
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel

    return {
        "unet": _tiny_unet(),
        "vae": _tiny_vae(),
        "text_encoder": CLIPTextModel(_clip_text_config()),
        "tokenizer": _tiny_tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            timestep_spacing="trailing",
            steps_offset=1,
        ),
    }


def build_stable_diffusion(folder: Path) -> None:
    """SD 1.x/2.x-shaped text-to-image checkpoint (also serves image-to-image
    and inpainting through diffusers' auto pipelines, as real SD does)."""
    import torch
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        **_stable_diffusion_components(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


BUILDERS: dict[Task, Callable[[Path], None]] = {
    Task.TEXT_TO_IMAGE: build_stable_diffusion,
    Task.IMAGE_TO_IMAGE: build_stable_diffusion,
}


def _snapshot_commit(folder: Path) -> str:
    """A stable fake commit id: the hash of every file in the snapshot."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_tiny_model(task: Task | str, model_dir: Path, revision: str = "main") -> Path:
    """Build the task's tiny checkpoint into ``model_dir`` unless it is already
    there; return its snapshot folder. Safe to call on every start."""
    task = Task(task)
    builder = BUILDERS.get(task)
    if builder is None:
        raise ValueError(f"no tiny model for task {task.value!r}")
    repo = repo_cache_dir(model_dir, tiny_model_id(task))
    ref = repo / "refs" / revision
    version_file = repo / ".tiny-format"
    if ref.is_file() and version_file.is_file() and version_file.read_text() == TINY_FORMAT_VERSION:
        snapshot = repo / "snapshots" / ref.read_text().strip()
        if (snapshot / "model_index.json").is_file():
            return snapshot

    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=repo))
    try:
        builder(staging)
        commit = _snapshot_commit(staging)
        snapshot = repo / "snapshots" / commit
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(snapshot)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    version_file.write_text(TINY_FORMAT_VERSION)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubediffusers-tiny-model",
        description="Build a tiny random-weight checkpoint into a Hugging Face cache directory (no download).",
    )
    parser.add_argument("--task", required=True, choices=[t.value for t in BUILDERS])
    parser.add_argument("--model-dir", required=True, type=Path, help="Hugging Face cache directory")
    args = parser.parse_args(argv)
    snapshot = ensure_tiny_model(args.task, args.model_dir)
    print(f"tiny model {tiny_model_id(args.task)} ready at {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
