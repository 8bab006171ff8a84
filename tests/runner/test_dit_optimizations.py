"""The optimizations that apply to transformer (DiT) checkpoints, on the tiny
models over HTTP: diffusers' cache hooks (transformerCache), text encoders kept
in CPU memory (textEncoderOffload) and regional compilation of the repeated
blocks (compile.regional); each refused at start-up with a one-line reason
where it does not apply."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kubediffusers.runner import optimizations
from kubediffusers.runner.dev.tiny import ensure_tiny_model, tiny_model_id
from tests.runner.helpers import decode, settings_for

FLUX = tiny_model_id("text-to-image", "flux")
SD3 = tiny_model_id("text-to-image", "sd3")
CASTLE = {"prompt": "a castle", "seed": 3, "width": 64, "height": 64, "num_inference_steps": 6}


@pytest.fixture(scope="module")
def tiny_dits(model_dir: Path) -> Path:
    ensure_tiny_model("text-to-image", model_dir, arch="sd3")
    ensure_tiny_model("image-to-video", model_dir)  # SVD: no text encoder
    return ensure_tiny_model("text-to-image", model_dir, arch="flux")


def _pipeline(client: TestClient) -> Any:
    return client.app.state.context.model.pipeline  # type: ignore[attr-defined]


def _image(client: TestClient, body: dict[str, Any]) -> np.ndarray:
    r = client.post("/text-to-image", json=body)
    assert r.status_code == 200, r.text
    return np.asarray(decode(r.json()["images"][0]["url"]), dtype=np.int16)


def _count_attention(pipe: Any) -> dict[str, int]:
    """Count the attention computations of every block (the processor runs only when the block itself does)."""
    calls = {"n": 0}
    for block in [*pipe.transformer.transformer_blocks, *pipe.transformer.single_transformer_blocks]:
        processor = block.attn.processor

        def counted(*args: Any, _processor: Any = processor, **kwargs: Any) -> Any:
            calls["n"] += 1
            return _processor(*args, **kwargs)

        block.attn.processor = counted
    return calls


def _not_ready(client: TestClient) -> str:
    health = client.get("/health").json()
    assert health["status"] == "ERROR", health
    assert "\n" not in health["detail"]
    return str(health["detail"])


# -- transformerCache -----------------------------------------------------------------


def test_taylorseer_skips_block_computations_and_each_call_starts_afresh(tiny_dits: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    plain = make_client("text-to-image", model_id=FLUX)
    reference = _image(plain, CASTLE)
    client: TestClient = make_client("text-to-image", model_id=FLUX, transformer_cache="taylorseer")
    assert client.get("/health").json()["status"] == "OK"
    calls = _count_attention(_pipeline(client).pipe)
    first = _image(client, CASTLE)
    # 6 steps x 2 blocks in full would be 12: TaylorSeer predicts steps 3 and 5 (full steps 0-2, then every 3rd).
    assert calls["n"] == 8
    assert np.abs(first - reference).mean() < 8  # close to the full computation (0-255 pixels)
    again = _image(client, CASTLE)
    assert calls["n"] == 16 and np.array_equal(again, first)  # no state carried from the first call


def test_first_block_cache_hooks_the_blocks_and_serves(tiny_dits: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    from diffusers.hooks import HookRegistry

    client: TestClient = make_client("text-to-image", model_id=FLUX, transformer_cache="first-block")
    transformer = _pipeline(client).pipe.transformer
    head = HookRegistry.check_if_exists_or_initialize(transformer.transformer_blocks[0])
    tail = HookRegistry.check_if_exists_or_initialize(transformer.single_transformer_blocks[-1])
    assert "fbc_leader_block_hook" in head.hooks and "fbc_block_hook" in tail.hooks
    assert _image(client, CASTLE).shape == (64, 64, 3)


def test_a_cancelled_call_leaves_no_cache_state_for_the_next(tiny_dits: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=FLUX, transformer_cache="taylorseer")
    pipe = _pipeline(client).pipe
    first = _image(client, CASTLE)

    def stop(*args: Any) -> Any:
        raise RuntimeError("cancelled mid-call")

    with pytest.raises(RuntimeError):
        pipe("a castle", num_inference_steps=6, height=64, width=64, callback_on_step_end=stop, max_sequence_length=32)
    assert np.array_equal(_image(client, CASTLE), first)  # reset before the call, not only at a normal end


@pytest.mark.parametrize(
    ("task", "model", "fragment"),
    [
        ("text-to-image", SD3, "SD3Transformer2DModel (StableDiffusion3Pipeline) has no diffusers cache hooks; leave it unset"),
        ("image-to-image", FLUX, "diffusers' FluxImg2ImgPipeline does not scope the cache per call (no cache_context); leave it unset for this task"),
        ("text-to-image", None, "caches transformer blocks; StableDiffusionPipeline has a UNet: leave it unset"),
    ],
)
def test_transformer_cache_is_refused_where_it_does_not_apply(tiny_dits: Path, make_client, task: str, model: str | None, fragment: str) -> None:  # type: ignore[no-untyped-def]
    overrides = {"model_id": model} if model else {}
    client: TestClient = make_client(task, transformer_cache="first-block", **overrides)
    assert fragment in _not_ready(client)


@pytest.mark.parametrize(("arch", "kind"), [("wan", "first-block"), ("wan", "taylorseer"), ("ltx", "taylorseer")])
def test_the_video_transformers_take_the_cache(model_dir: Path, make_client, arch: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    from tests.runner.video_helpers import t2v

    ensure_tiny_model("text-to-video", model_dir, arch=arch)
    client: TestClient = make_client("text-to-video", model_id=tiny_model_id("text-to-video", arch), transformer_cache=kind)
    assert client.get("/health").json()["status"] == "OK"
    r = t2v(client, num_frames=5, height=32, width=32, num_inference_steps=5)
    assert r.status_code == 200, r.text
    assert len(r.json()["frames"][0]) == 5


def test_first_block_cache_needs_two_blocks(model_dir: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    ensure_tiny_model("text-to-video", model_dir, arch="ltx")  # the tiny LTX-Video transformer has one block
    client: TestClient = make_client("text-to-video", model_id=tiny_model_id("text-to-video", "ltx"), transformer_cache="first-block")
    assert (
        "transformerCache first-block needs at least two transformer blocks (the first decides for the rest); LTXVideoTransformer3DModel has fewer"
        in _not_ready(client)
    )


def test_transformer_cache_names_are_checked_by_the_settings(model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="transformer_cache"):
        settings_for(model_dir, transformer_cache="teacache")


# -- textEncoderOffload ----------------------------------------------------------------


def test_text_encoder_offload_generates_the_same_image(tiny_dits: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    from diffusers.hooks import HookRegistry

    plain = _image(make_client("text-to-image", model_id=FLUX), CASTLE)
    client: TestClient = make_client("text-to-image", model_id=FLUX, text_encoder_offload=True)
    pipe = _pipeline(client).pipe
    for name in ("text_encoder", "text_encoder_2"):
        leaves = [m for m in getattr(pipe, name).modules() if not list(m.children()) and list(m.parameters())]
        assert leaves and all("group_offloading" in HookRegistry.check_if_exists_or_initialize(m).hooks for m in leaves), name
    assert np.array_equal(_image(client, CASTLE), plain)


def test_text_encoder_offload_is_refused_without_text_encoders_and_with_cpu_offload(tiny_dits: Path, model_dir: Path, make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("image-to-video", text_encoder_offload=True)
    assert "textEncoderOffload keeps text encoders in CPU memory; StableVideoDiffusionPipeline has none" in _not_ready(client)
    with pytest.raises(ValidationError, match="text_encoder_offload cannot be combined with cpu_offload"):
        settings_for(model_dir, text_encoder_offload=True, cpu_offload="model")


# -- compile.regional --------------------------------------------------------------------


@pytest.fixture
def recorded_compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """torch.compile for real takes minutes on this CPU: what would be compiled is recorded
    (whole-model torch.compile and nn.Module.compile, which compile_repeated_blocks calls)."""
    seen: list[str] = []
    real = inspect.signature(torch.compile)

    def whole(fn: Any, *args: Any, **kwargs: Any) -> Any:
        real.bind(fn, *args, **kwargs)  # as strict as torch.compile about its arguments
        seen.append(f"whole:{type(fn).__name__}:{kwargs.get('mode')}")
        return fn

    def module_compile(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        real.bind(self, *args, **kwargs)  # nn.Module.compile passes these on to torch.compile
        seen.append(f"block:{type(self).__name__}:{kwargs.get('mode')}")

    monkeypatch.setattr(torch, "compile", whole)
    monkeypatch.setattr(torch.nn.Module, "compile", module_compile)
    return seen


def test_compile_on_a_transformer_compiles_its_repeated_blocks(tiny_dits: Path, recorded_compiles: list[str], make_client) -> None:  # type: ignore[no-untyped-def]
    client: TestClient = make_client("text-to-image", model_id=FLUX, compile_unet=True)
    assert client.get("/health").json()["status"] == "OK"
    assert sorted(set(recorded_compiles)) == ["block:FluxSingleTransformerBlock:default", "block:FluxTransformerBlock:default"]
    assert _image(client, CASTLE).shape == (64, 64, 3)


def test_regional_off_or_no_repeated_blocks_compiles_the_whole_model(tiny_dits: Path, model_dir: Path, recorded_compiles: list[str]) -> None:
    from kubediffusers.runner.pipelines import pipeline_class
    from kubediffusers.runner.settings import Task

    def applied(model_id: str, **overrides: Any) -> list[str]:
        settings = settings_for(model_dir, model_id=model_id, compile_unet=True, compile_cache_dir=model_dir / ".cc", **overrides)
        pipe = (
            pipeline_class(Task.TEXT_TO_IMAGE)
            .auto_class()
            .from_pretrained(ensure_tiny_model("text-to-image", model_dir, arch="sd3" if model_id == SD3 else "flux"), local_files_only=True)
        )
        return optimizations.apply(pipe, settings, torch.float32)

    assert "compiled-unet:default" in applied(FLUX, compile_regional=False)
    assert recorded_compiles == ["whole:FluxTransformer2DModel:default"]
    recorded_compiles.clear()
    assert "compiled-unet:default" in applied(SD3)  # SD3's transformer names no repeated blocks
    assert recorded_compiles == ["whole:SD3Transformer2DModel:default"]
    recorded_compiles.clear()
    assert "compiled-blocks:default" in applied(FLUX)
