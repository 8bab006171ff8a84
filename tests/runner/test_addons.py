"""Add-ons declared for the runner, fetched by the real fetcher from the Hub stand-in,
loaded through the fetcher's markers and used over HTTP (issue 13, points 6-8)."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

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


# -- point 7: LoRA adapters -------------------------------------------------------

LORA_A, LORA_B = tiny.tiny_lora_id("sd", 0), tiny.tiny_lora_id("sd", 1)
DECLARED = [
    {"name": "a", "id": LORA_A, "scale": 0.5},
    {"name": "b", "id": LORA_B, "weight_name": tiny.LORA_WEIGHT_NAME},
]


def loras(**weights: float | None) -> str:
    return json.dumps(weights)


@pytest.fixture
def lora_cache(addon_hub, tmp_path: Path) -> Path:
    return fetch(tmp_path, addon_hub, SD, loras=DECLARED)


def test_adapters_are_fetched_with_the_model_safetensors_only(lora_cache: Path) -> None:
    for repo_id in (LORA_A, LORA_B):
        marker = read_marker(lora_cache, repo_id, "main", None)
        assert marker is not None and [f.path for f in marker.files] == [tiny.LORA_WEIGHT_NAME]  # no README, .bin or .pth


def test_an_adapter_changes_the_image_and_removing_it_restores_the_bytes(lora_cache: Path, served) -> None:
    plain = generate(served(lora_cache, SD).url)
    server = served(lora_cache, SD, loras=DECLARED)
    assert plain.status_code == 200
    assert generate(server.url).content == plain.content  # declared but unused: the model alone
    with_a = generate(server.url, loras=loras(a=1.0))
    assert with_a.status_code == 200 and with_a.content != plain.content
    assert generate(server.url).content == plain.content  # deactivated, not fused
    by_id = generate(server.url, loras=loras(**{LORA_A: 1.0}))
    assert by_id.content == with_a.content  # by repository id or by name: the same adapter
    as_object = httpx.post(server.url + "/text-to-image", json={**BODY, "loras": {"a": 1.0}}, headers={"Accept": "image/png"}, timeout=120)
    assert as_object.content == with_a.content  # a JSON body may send the object itself
    declared_scale = generate(server.url, loras=loras(a=None)).content
    assert declared_scale == generate(server.url, loras=loras(a=0.5)).content != with_a.content
    both = generate(server.url, loras=loras(a=1.0, b=0.7)).content
    assert both not in (with_a.content, plain.content, generate(server.url, loras=loras(b=0.7)).content)
    assert generate(server.url, loras=loras(a=0)).content == plain.content  # weight 0: no adapter
    assert generate(server.url, loras="").content == plain.content


BAD_LORAS = [
    (loras(c=1.0), f"'c' is not a LoRA adapter of this runner; declared: a ({LORA_A}), b ({LORA_B})"),
    ("{not json", "unable to parse"),
    ('["a"]', "must be a JSON object"),
    (loras(a=1, b=1, x=1, y=1, z=1), "at most 4 adapters"),
    (loras(a=-1.0), "must be a number from 0 to 10"),
    ('{"a": true}', "must be a number from 0 to 10"),
    ('{"a": "1"}', "must be a number from 0 to 10"),
    ('{"a": 1, "' + LORA_A + '": 1}', "named twice"),
]


def test_bad_loras_are_a_400_before_anything_is_queued(lora_cache: Path, served) -> None:
    from tests.runner.helpers import assert_error

    server = served(lora_cache, SD, loras=DECLARED, warmup=False)
    for value, fragment in BAD_LORAS:
        assert_error(generate(server.url, loras=value), 400, fragment)
    assert_error(generate(server.url, loras="x" * 4001), 422, "loras")


def test_a_runner_without_adapters_lists_none(lora_cache: Path, served) -> None:
    from tests.runner.helpers import assert_error

    assert_error(generate(served(lora_cache, SD, warmup=False).url, loras=loras(a=1.0)), 400, "it declares none (spec.loras)")


def test_requests_with_different_adapters_in_one_batch_window_come_out_as_if_served_alone(lora_cache: Path, served) -> None:
    from tests.runner.helpers import gated, metric, wait_until

    server = served(lora_cache, SD, loras=DECLARED, max_batch_size=8, batch_window_ms=200)
    bodies = [
        {"seed": 1, "loras": loras(a=1.0)},
        {"seed": 1, "loras": loras(b=1.0)},
        {"seed": 2, "loras": loras(a=1.0)},  # the same set as the first: may share its call
        {"seed": 1},
    ]
    with gated(server.app) as gate, ThreadPoolExecutor(len(bodies) + 1) as pool:
        held = pool.submit(generate, server.url, prompt="hold")
        gate.wait_entered()
        futures = [pool.submit(generate, server.url, **body) for body in bodies]
        wait_until(lambda: httpx.get(server.url + "/health").json()["queue_depth"] == len(bodies), what="all queued")
        gate.release.set()
        assert held.result(60).status_code == 200
        batched = [f.result(60) for f in futures]
    assert all(r.status_code == 200 for r in batched)
    text = httpx.get(server.url + "/metrics").text
    # held; [a seed 1, a seed 2]; [b]; [none]
    assert metric(text, "kubediffusers_batch_requests_count") == 4 and metric(text, "kubediffusers_batch_requests_sum") == 5
    alone = [generate(server.url, **body).content for body in bodies]
    assert batched[1].content == alone[1] and batched[3].content == alone[3]  # each ran in a call of its own
    for index in (0, 2):  # shared a call with the same adapters: batch-size rounding may flip a rare pixel by one level
        difference = np.abs(png_pixels(batched[index].content) - png_pixels(alone[index]))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    assert len({alone[0], alone[1], alone[3]}) == 3


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_sdxl_takes_adapters_too(addon_hub, served, tmp_path: Path) -> None:
    sdxl, lora = tiny.tiny_model_id("text-to-image", "sdxl"), tiny.tiny_lora_id("sdxl", 0)
    model_dir = fetch(tmp_path, addon_hub, sdxl, loras=[{"name": "xl", "id": lora}])
    server = served(model_dir, sdxl, loras=[{"name": "xl", "id": lora}])
    plain = generate(server.url).content
    with_xl = generate(server.url, loras=loras(xl=1.0))
    assert with_xl.status_code == 200 and with_xl.content != plain
    assert generate(server.url).content == plain


def test_an_adapter_that_does_not_fit_the_model_is_a_not_ready_reason(addon_hub, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.settings import RunnerSettings
    from tests.runner.helpers import wait_until

    model_dir = fetch(tmp_path, addon_hub, SD, loras=[{"name": "xl", "id": tiny.tiny_lora_id("sdxl", 0)}])
    settings = RunnerSettings(task="text-to-image", model_id=SD, model_dir=model_dir, device="cpu", loras=[{"name": "xl", "id": tiny.tiny_lora_id("sdxl", 0)}])
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health").json()["status"] != "LOADING", what="model load")
        health = client.get("/health").json()
    assert health["status"] == "ERROR"
    assert f"LoRA adapter xl ({tiny.tiny_lora_id('sdxl', 0)}) does not fit {SD}" in health["detail"]


def test_an_unfetched_adapter_is_a_not_ready_reason(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.settings import RunnerSettings
    from tests.runner.helpers import wait_until

    tiny.ensure_tiny_model("text-to-image", tmp_path)
    settings = RunnerSettings(task="text-to-image", model_id=SD, model_dir=tmp_path, device="cpu", loras=[{"name": "x", "id": "org/never-fetched"}])
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health").json()["status"] != "LOADING", what="model load")
        health = client.get("/health").json()
    assert health["status"] == "ERROR" and "LoRA adapter org/never-fetched@main is not in the cache" in health["detail"]


# -- point 8: the safety checker --------------------------------------------------


@pytest.fixture
def checker_cache(addon_hub, tmp_path: Path) -> Path:
    """The model and both tiny checkers (one flags nothing, one everything), as two fetches of one cache."""
    fetch(tmp_path, addon_hub, SD, safety_checker_enabled="true", safety_checker_model_id=tiny.TINY_SAFETY_CHECKER_ID)
    return fetch(tmp_path, addon_hub, SD, safety_checker_enabled="true", safety_checker_model_id=tiny.TINY_STRICT_SAFETY_CHECKER_ID)


def nsfw_flags(response: httpx.Response) -> list[bool]:
    assert response.status_code == 200, response.text
    return [image["nsfw"] for image in response.json()["images"]]


def test_the_safety_checker_flags_both_ways_and_safety_check_false_skips_it(checker_cache: Path, served) -> None:
    marker = read_marker(checker_cache, tiny.TINY_SAFETY_CHECKER_ID, "main", None)
    assert marker is not None and {f.path for f in marker.files} == {"config.json", "preprocessor_config.json", "model.safetensors"}
    lenient = served(checker_cache, SD, warmup=False, safety_checker_enabled=True, safety_checker_model_id=tiny.TINY_SAFETY_CHECKER_ID)
    strict = served(checker_cache, SD, warmup=False, safety_checker_enabled=True, safety_checker_model_id=tiny.TINY_STRICT_SAFETY_CHECKER_ID)
    body = {**BODY, "num_images_per_prompt": 2}
    assert nsfw_flags(httpx.post(lenient.url + "/text-to-image", json=body, timeout=120)) == [False, False]
    assert nsfw_flags(httpx.post(strict.url + "/text-to-image", json=body, timeout=120)) == [True, True]
    assert nsfw_flags(httpx.post(strict.url + "/text-to-image", json={**body, "safety_check": False}, timeout=120)) == [False, False]
    png = generate(strict.url)
    assert png.headers["x-nsfw"] == "true"
    # policy flag: the image is returned as generated
    assert png.content == generate(strict.url, safety_check=False).content


def test_policy_blank_returns_flagged_images_black(checker_cache: Path, served) -> None:
    server = served(
        checker_cache, SD, warmup=False, safety_checker_enabled=True, safety_checker_model_id=tiny.TINY_STRICT_SAFETY_CHECKER_ID, safety_checker_policy="blank"
    )
    flagged = generate(server.url)
    assert flagged.headers["x-nsfw"] == "true"
    image = Image.open(io.BytesIO(flagged.content))
    assert image.size == (64, 64) and image.getextrema() == ((0, 0), (0, 0), (0, 0))
    unchecked = Image.open(io.BytesIO(generate(server.url, safety_check=False).content))
    assert unchecked.getextrema() != ((0, 0), (0, 0), (0, 0))


def test_every_image_task_reports_the_checkers_flags(checker_cache: Path, served) -> None:
    """image-to-image (a multipart form): the same flags, and safety_check as a form field."""
    from tests.runner.helpers import png

    server = served(
        checker_cache, SD, task="image-to-image", warmup=False, safety_checker_enabled=True, safety_checker_model_id=tiny.TINY_STRICT_SAFETY_CHECKER_ID
    )
    form = {"prompt": "a boat", "num_inference_steps": "2", "seed": "1", "strength": "0.5"}
    files = {"image": ("in.png", png((64, 64)), "image/png")}
    assert nsfw_flags(httpx.post(server.url + "/image-to-image", data=form, files=files, timeout=120)) == [True]
    assert nsfw_flags(httpx.post(server.url + "/image-to-image", data={**form, "safety_check": "false"}, files=files, timeout=120)) == [False]


def test_a_video_is_flagged_when_a_frame_is_and_blanked_whole(checker_cache: Path) -> None:
    import torch

    from kubediffusers.runner.params import ImageToVideoParams
    from kubediffusers.runner.safety import SafetyChecker
    from kubediffusers.runner.settings import RunnerSettings
    from kubediffusers.runner.types import GeneratedVideo, Work

    settings = RunnerSettings(
        task="image-to-video",
        model_id="a/b",
        model_dir=checker_cache,
        safety_checker_enabled=True,
        safety_checker_model_id=tiny.TINY_STRICT_SAFETY_CHECKER_ID,
        safety_checker_policy="blank",
    )
    checker = SafetyChecker.load(settings, "cpu", torch.float32)
    assert checker is not None
    frames = [Image.new("RGB", (64, 64), (200, 30, 30)) for _ in range(3)]
    params = ImageToVideoParams.model_construct(safety_check=True)
    video = GeneratedVideo(frames=frames, seed=1, fps=7)
    checker.check([Work(params=params, seed=1, num_images=1)], [[video]])
    assert video.nsfw and all(frame.getextrema() == ((0, 0), (0, 0), (0, 0)) for frame in video.frames)


def test_an_unfetched_safety_checker_is_a_not_ready_reason(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from kubediffusers.runner.app import create_app
    from kubediffusers.runner.settings import RunnerSettings
    from tests.runner.helpers import wait_until

    tiny.ensure_tiny_model("text-to-image", tmp_path)
    settings = RunnerSettings(task="text-to-image", model_id=SD, model_dir=tmp_path, device="cpu", safety_checker_enabled=True)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/health").json()["status"] != "LOADING", what="model load")
        health = client.get("/health").json()
    assert health["status"] == "ERROR"
    assert "safety checker CompVis/stable-diffusion-safety-checker@main is not in the cache" in health["detail"]
