"""Add-ons declared for the runner, fetched by the real fetcher from the Hub stand-in,
loaded through the fetcher's markers and used over HTTP (issue 13, points 6-8)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kubediffusers.runner.dev import tiny
from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.fetch.marker import read_marker
from kubediffusers.runner.snapshots import locate
from tests.runner.addon_hub import fetch
from tests.runner.helpers import STEPS

SD = tiny.tiny_model_id("text-to-image")
BODY = {"prompt": "a lighthouse", "num_inference_steps": STEPS, "seed": 3}


def generate(url: str, **extra: object) -> httpx.Response:
    return httpx.post(url + "/text-to-image", json={**BODY, **extra}, headers={"Accept": "image/png"}, timeout=120)


def test_the_fetched_tiny_vae_loads_through_its_marker_and_decodes(addon_hub, served, tmp_path: Path) -> None:
    """The tiny VAE's repository carries files the fetcher skips on purpose (README, .bin, .pth): the
    snapshot is 'incomplete' to huggingface_hub, complete to the marker, and the runner loads it."""
    model_dir = fetch(tmp_path, addon_hub, SD, tiny_vae_id=tiny.TINY_VAE_ID)
    vae = read_marker(model_dir, tiny.TINY_VAE_ID, "main", None)
    assert vae is not None and {f.path for f in vae.files} == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert not (vae.snapshot_path / "taesd_decoder.pth").exists()
    assert locate(model_dir, tiny.TINY_VAE_ID).marked and locate(model_dir, SD).marked

    with_tiny = served(model_dir, SD, tiny_vae_id=tiny.TINY_VAE_ID)
    plain = served(model_dir, SD)
    a, b = generate(with_tiny.url), generate(plain.url)
    assert a.status_code == b.status_code == 200, a.text + b.text
    assert a.content != b.content  # the tiny VAE decoded the first
    assert type(with_tiny.app.state.context.model.pipeline.pipe.vae).__name__ == "AutoencoderTiny"


def test_an_unfetched_add_on_is_a_one_line_not_ready_reason(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelUnavailable, match=r"LoRA adapter org/missing@main is not in the cache at .*kubediffusers-fetch"):
        locate(tmp_path / "models", "org/missing", what="LoRA adapter")


def test_a_cache_without_markers_resolves_refs_offline(tmp_path: Path) -> None:
    """A cache filled by other means: refs/<revision> names the snapshot; no huggingface_hub call."""
    snapshot = tiny.ensure_tiny_vae(tmp_path)
    found = locate(tmp_path, tiny.TINY_VAE_ID)
    assert (found.path, found.commit, found.marked) == (snapshot, snapshot.name, False)
    assert locate(tmp_path, tiny.TINY_VAE_ID, snapshot.name).path == snapshot  # a commit as the revision
    with pytest.raises(ModelUnavailable, match="not in the cache"):
        locate(tmp_path, tiny.TINY_VAE_ID, "../../etc")
