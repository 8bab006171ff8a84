"""Compiled image sizes (settings.compile_sizes): the setting and its checks, warm-up
at every size, and, once ready, no compiling in the request path: torch's
compiler stance (pipelines.recompiles.UncompiledWatch) runs a call that misses the
graphs warm-up compiled eagerly, and the runner counts it.

Real dynamo throughout (the eager backend: tracing and guards as inductor has
them, no code generation); test_compile_http.py compiles with inductor."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry, Counter

from kubediffusers.runner.errors import ModelUnavailable
from kubediffusers.runner.pipelines import base
from kubediffusers.runner.pipelines.recompiles import RecompileWatch, UncompiledWatch
from kubediffusers.runner.pipelines.text_to_image import TextToImagePipeline
from kubediffusers.runner.settings import ConfigurationError, RunnerSettings, load_settings
from tests.runner.helpers import metric

BODY = {"prompt": "a red fox", "num_inference_steps": 1, "guidance_scale": 5.0, "seed": 3}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["64x60"]', "64x60: sides must be multiples of 8 from 8 to 8192"),
        ('["16384x8"]', "16384x8: sides must be multiples of 8 from 8 to 8192"),
        ('["2048x2048"]', "2048x2048 is 4194304 pixels, more than max_pixels 2359296"),
        ('["64x64", "64x64"]', "must not repeat a size"),
        ('["0x64"]', "should match pattern"),
        ('["64*64"]', "should match pattern"),
        ('[" 64x64"]', "should match pattern"),
        ("[]", "at least 1 item"),
        ("64x64", "KUBEDIFFUSERS_COMPILE_SIZES"),  # not a JSON list
    ],
)
def test_bad_compile_sizes_stop_the_runner_with_one_line(value: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_COMPILE_SIZES", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(task="text-to-image", model_id="a/b")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("task", ["upscale", "image-to-video", "text-to-video"])
def test_compile_sizes_are_refused_where_warm_up_cannot_cover_requests(task: str) -> None:
    with pytest.raises(ValueError, match=f"compile_sizes applies to text-to-image, image-to-image, inpainting, image-variation, not {task}"):
        RunnerSettings(task=task, model_id="a/b", compile_sizes=["64x64"])


def test_compile_sizes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_COMPILE_SIZES", '["512x512", "768x512"]')
    assert load_settings(task="inpainting", model_id="a/b").compile_sizes == ["512x512", "768x512"]
    monkeypatch.delenv("KUBEDIFFUSERS_COMPILE_SIZES")
    assert load_settings(task="text-to-image", model_id="a/b").compile_sizes is None


class SteppedPipeline(TextToImagePipeline):
    """A text-to-image pipeline whose checkpoint generates sizes in steps of 16 at 1024x1024 (as FLUX does)."""

    @property
    def size_multiple(self) -> int:
        return 16

    def default_size(self) -> tuple[int, int]:
        return 1024, 1024


def test_sizes_to_compile_are_the_setting_or_the_default_size_and_keep_the_checkpoint_step(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = SteppedPipeline(pipe=None, device="cpu")
    settings = functools.partial(RunnerSettings, task="text-to-image", model_id="a/b", compile_vae=True)
    assert pipeline.sizes_to_compile(settings()) == ((1024, 1024),)
    with caplog.at_level(logging.INFO):
        assert pipeline.sizes_to_compile(settings(compile_sizes=["768x512", "512x768"])) == ((768, 512), (512, 768))
    assert "leaves out the default size 1024x1024" in caplog.text
    with pytest.raises(ModelUnavailable, match=r"compile_sizes 520x512, 512x8: this checkpoint generates sizes in steps of 16 pixels"):
        pipeline.sizes_to_compile(settings(compile_sizes=["520x512", "512x8", "512x512"]))


def test_a_checkpoint_step_the_sizes_miss_leaves_the_runner_up_and_not_ready(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(TextToImagePipeline, "size_multiple", property(lambda self: 16))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    client = make_client(compile_vae=True, compile_sizes=["64x64", "64x40"], warmup=False)
    health = client.get("/health").json()
    assert health["status"] == "ERROR" and "compile_sizes 64x40: this checkpoint generates sizes in steps of 16 pixels" in health["detail"]


def test_warm_up_runs_every_size_at_every_bucket_with_and_without_guidance(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[int, int, float, int]] = []
    real = base.BatchedPipeline.run_batch

    def recording(self, works, on_step=None):  # type: ignore[no-untyped-def]
        seen.extend((w.params.width, w.params.height, w.params.guidance_scale, w.num_images) for w in works)
        return real(self, works, on_step)

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(base.BatchedPipeline, "run_batch", recording)
    make_client(compile_vae=True, max_batch_size=2, max_images_per_request=1, compile_sizes=["64x48", "32x32"])
    assert seen == [(w, h, g, n) for w, h in ((64, 48), (32, 32)) for n in (1, 2) for g in (7.5, 0.0)]


@pytest.mark.parametrize("task", ["image-to-image", "inpainting"])
def test_warm_up_of_an_image_task_runs_inputs_of_each_size(task: str, make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, tuple[int, int], float]] = []
    cls = base.BatchedPipeline if task == "image-to-image" else base.TaskPipeline
    real = cls.run_batch

    def recording(self, works, on_step=None):  # type: ignore[no-untyped-def]
        seen.extend((name, image.size, w.params.guidance_scale) for w in works for name, image in sorted(w.images.items()))
        return real(self, works, on_step)

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(cls, "run_batch", recording)
    make_client(task, compile_unet=True, max_images_per_request=1, compile_sizes=["64x48", "48x64"])
    names = ["image"] if task == "image-to-image" else ["image", "mask_image"]
    assert seen == [(name, size, g) for size in ((64, 48), (48, 64)) for g in (7.5, 0.0) for name in names]


def counter(name: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(name, "test", labels, registry=CollectorRegistry())


def test_after_install_calls_that_miss_the_graphs_run_eagerly_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    """The stance on a real compiled function: a call at a compiled size keeps its graph; one at
    another size runs eagerly from the start (reason size); one at a compiled size whose guards
    fail (a shape warm-up did not foresee) is refused by dynamo, run again eagerly (reason shape).
    Nothing compiles (the recompilation counter stays 0), and each gives the eager result."""
    recompiled, uncompiled = counter("kubediffusers_recompilations"), counter("kubediffusers_uncompiled_calls", ("reason",))
    recompiles, watch = RecompileWatch(recompiled), UncompiledWatch(uncompiled)
    compiles: list[tuple[int, ...]] = []
    graph_runs: list[tuple[int, ...]] = []
    calls: list[int] = []

    def backend(graph: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        compiles.append(tuple(inputs[0].shape))

        def run(*args: torch.Tensor) -> Any:  # runs only when the compiled graph does
            graph_runs.append(tuple(args[0].shape))
            return graph.forward(*args)

        return run

    compiled = torch.compile(lambda x: x * 2 + 1, backend=backend, dynamic=False)

    def call(n: int) -> torch.Tensor:  # one pipeline call: what the watch may run twice
        calls.append(n)
        return compiled(torch.ones(n))

    compiled(torch.ones(2))  # warm-up: compiled
    recompiles.install()
    watch.install([(64, 64)])
    try:
        assert torch.equal(watch.run((64, 64), functools.partial(call, 2)), torch.full((2,), 3.0))
        assert compiles == [(2,)] and graph_runs == [(2,), (2,)] and calls == [2]  # the cached graph, once
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert torch.equal(watch.run((64, 40), functools.partial(call, 5)), torch.full((5,), 3.0))
        assert compiles == [(2,)] and graph_runs == [(2,), (2,)] and calls == [2, 5, 5, 5]  # eager, each once
        assert uncompiled.labels(reason="size")._value.get() == 3
        assert caplog.text.count("64x40 was not compiled at warm-up (compiled: 64x64)") == 1  # one line per size, not per call
        watch.run((40, 64), functools.partial(call, 2))
        assert caplog.text.count("was not compiled at warm-up") == 2
        assert uncompiled.labels(reason="size")._value.get() == 4
        calls.clear()
        with caplog.at_level(logging.WARNING):
            assert torch.equal(watch.run((64, 64), functools.partial(call, 3)), torch.full((3,), 3.0))  # a compiled size, a new shape
        assert calls == [3, 3] and compiles == [(2,)]  # refused, then run again eagerly: nothing compiled
        assert uncompiled.labels(reason="shape")._value.get() == 1
        assert "a call at 64x64 missed the graphs warm-up compiled" in caplog.text
        assert recompiled._value.get() == 0
        with pytest.raises(RuntimeError, match="not dynamo's"):  # other errors are the call's own
            watch.run((64, 64), functools.partial(_raise, RuntimeError("not dynamo's")))
    finally:
        watch.remove()
        recompiles.remove()
    compiled(torch.ones(7))  # the stance is back to default: this one compiles
    assert compiles == [(2,), (7,)] and graph_runs[-1] == (7,)
    assert torch.equal(watch.run((8, 8), functools.partial(call, 2)), torch.full((2,), 3.0))  # removed: no longer counting
    assert uncompiled.labels(reason="size")._value.get() == 4


def _raise(exc: Exception) -> None:
    raise exc


def eager_dynamo(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile as the runner calls it, with dynamo's eager backend (no inductor code generation)."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, dynamic=None: real(fn, backend="eager", dynamic=dynamic))
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(var, raising=False)


def test_after_ready_no_request_compiles_and_an_unwarmed_size_is_counted(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The tiny pipeline with its VAE decoder compiled by real dynamo at 64x64 and 64x48."""
    import torch._dynamo

    torch._dynamo.reset()  # other tests' compiled code must not count here
    eager_dynamo(monkeypatch)
    client = make_client(compile_vae=True, max_images_per_request=1, compile_sizes=["64x64", "64x48"])
    assert client.get("/readyz").status_code == 200

    def served(**size: int) -> tuple[float, float]:
        response = client.post("/text-to-image", json={**BODY, **size})
        assert response.status_code == 200, response.text
        text = client.get("/metrics").text
        return metric(text, "kubediffusers_recompilations_total"), metric(text, "kubediffusers_uncompiled_calls_total", reason="size")

    assert served() == (0, 0)  # the default size, 64x64
    assert served(width=64, height=48) == (0, 0)  # the second compiled size
    assert served(width=48, height=64) == (0, 1)  # not warmed: eager, counted, not compiled
    assert served(width=48, height=64, guidance_scale=0.0) == (0, 2)
    assert served(width=64, height=48, guidance_scale=0.0) == (0, 2)


def test_a_call_whose_guards_fail_after_ready_runs_again_eagerly_and_is_counted(make_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Warm-up's graphs dropped after ready (torch._dynamo.reset), as if it had missed a shape:
    dynamo refuses to compile the request's call, which is run again eagerly, answered, counted."""
    import torch._dynamo

    torch._dynamo.reset()
    eager_dynamo(monkeypatch)
    client = make_client(compile_vae=True, max_images_per_request=1)
    assert client.get("/readyz").status_code == 200
    compiled = client.post("/text-to-image", json=BODY).json()["images"]
    torch._dynamo.reset()
    response = client.post("/text-to-image", json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["images"] == compiled  # run again from the start: fresh generators, the same image
    text = client.get("/metrics").text
    assert metric(text, "kubediffusers_uncompiled_calls_total", reason="shape") == 1
    assert metric(text, "kubediffusers_uncompiled_calls_total", reason="size") == 0
    assert metric(text, "kubediffusers_recompilations_total") == 0
