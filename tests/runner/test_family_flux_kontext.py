"""FLUX.1 Kontext (FluxKontextPipeline) as image-to-image over HTTP on the CPU
with default settings: the tiny Kontext-shaped checkpoint edits the input at
its own (fitted) size; the family's defaults and refusals hold.

Why its warm-up never finished last round: Kontext scales every output to
``max_area`` pixels (a megapixel by default) and first resizes the input to
one of its preferred resolutions, so with the tiny checkpoint's 1x VAE the
transformer saw a 512x512-token image plus as many context tokens. The
runner now tells it the size (``max_area`` of the fitted input, no auto
resize): the size requested is the size generated, on a CPU or a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from kubediffusers.runner.families import family_of
from kubediffusers.runner.settings import Task
from tests.runner.helpers import assert_error, decode, png

KONTEXT = tiny_model_id("image-to-image", "flux-kontext")


@pytest.fixture(scope="module")
def kontext(model_dir: Path) -> Path:
    return ensure_tiny_model("image-to-image", model_dir, arch="flux-kontext")


def test_the_tiny_checkpoint_is_recognised(kontext: Path) -> None:
    row = family_of(kontext)
    assert row is not None and row.name == "flux-kontext" and row.tasks == {Task.IMAGE_TO_IMAGE}


def test_image_to_image_edits_at_the_inputs_size(kontext: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-image", model_id=KONTEXT)
    assert client.get("/health").json()["status"] == "OK"
    pipeline = client.app.state.context.model.pipeline  # type: ignore[attr-defined]
    assert pipeline.family.name == "flux-kontext" and type(pipeline.pipe).__name__ == "FluxKontextPipeline"
    image = {"image": ("in.png", png((64, 48)), "image/png")}
    r = client.post("/image-to-image", data={"prompt": "make it night", "seed": "1", "num_inference_steps": "2"}, files=image)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (64, 48)
    r = client.post("/image-to-image", data={"prompt": "make it night", "width": "32", "num_inference_steps": "2"}, files=image)
    assert r.status_code == 200, r.text
    assert decode(r.json()["images"][0]["url"]).size == (32, 24)  # one side given keeps the aspect ratio
    r = client.post(
        "/image-to-image",
        data={"prompt": "make it night", "negative_prompt": "fog", "true_cfg_scale": "2", "num_inference_steps": "2"},
        files=image,
    )
    assert r.status_code == 200, r.text
    # One step runs one step: strength x steps (0.8 x 1 rounds to 0 on other families) does not apply here.
    r = client.post("/image-to-image", data={"prompt": "make it night", "num_inference_steps": "1"}, files=image)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"strength": "0.5"}, "strength does not apply to flux-kontext checkpoints"),
        ({"negative_prompt": "fog"}, "reads negative_prompt only with true_cfg_scale above 1"),
        ({"height": "44"}, "height must be a multiple of 8"),
    ],
)
def test_bad_requests(kontext: Path, make_client, data: dict, fragment: str) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-image", model_id=KONTEXT)
    r = client.post("/image-to-image", data={"prompt": "make it night", **data}, files={"image": ("in.png", png((64, 48)), "image/png")})
    assert_error(r, 400, fragment)


def test_kontext_serves_image_to_image_only(kontext: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=KONTEXT)
    health = client.get("/health").json()
    assert health["status"] == "ERROR" and "(FluxKontextPipeline) cannot serve text-to-image; it serves image-to-image" in health["detail"]
