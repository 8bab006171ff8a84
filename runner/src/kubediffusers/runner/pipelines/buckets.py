"""Compiled batch sizes (buckets): no compilation in the request path.

A compiled denoiser or VAE decoder is specialised to the shapes it has seen
(``torch.compile(dynamic=False)``, optimizations._compile): one static graph
per batch size, which is what CUDA graphs and max-autotune want. A call with a
new batch size would compile again, seconds to minutes inside a request. So,
with compile on, every diffusers call a batched pipeline makes has one of a
few batch sizes, the buckets, and warm-up compiles exactly those
(``BatchedPipeline.warmup_batches``: each bucket with and without
classifier-free guidance, which doubles the denoiser's batch):

- a call of fewer rows than a bucket is padded up to it: the padding rows
  repeat the last real row's prompt and inputs, get generators of their own
  (so no real row's generator is drawn from twice), and are cut off the output
  tensor before it becomes images (``postprocess.to_pixels``) and before the
  safety checker and the encoders see anything. A real row keeps its prompt
  and its generator (seed + i), and each row's computation depends only on its
  own inputs, so with the same compiled graph a padded call gives the real
  rows the very images an unpadded call of that size gives them;
- a call of more rows than the largest bucket (a request of 4 images with
  buckets 1,2) is split into calls of the largest bucket, the rest padded.

Buckets are ``settings.compile_batch_sizes``, by default the powers of two up
to, and then, the largest call the runner makes: ``max_batch_size``, or a
single request's ``max_images_per_request`` when that is larger (batching off
still serves requests of several images in one call). Without compile, calls
are never padded (padding costs compute; eager kernels take any shape).

Image sizes are the other half of a shape: warm-up runs every bucket at each
of ``settings.compile_sizes`` (default: the checkpoint's own size), and after
it the runner holds torch to the graphs it has (pipelines.recompiles): a call
at another size runs eagerly, and is counted, rather than compiling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kubediffusers.runner.pipelines.postprocess import to_pixels
from kubediffusers.runner.settings import RunnerSettings

# Seed of the padding rows' generators: any value would do, their images are discarded.
PADDING_SEED = 0


def largest_call(settings: RunnerSettings) -> int:
    """The most images one pipeline call serves: a batch of requests, or one request alone."""
    return max(settings.max_batch_size, settings.max_images_per_request)


def default_sizes(largest: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``largest``, then ``largest``: at most twice the compute of an unpadded call."""
    sizes, size = [], 1
    while size < largest:
        sizes.append(size)
        size *= 2
    return (*sizes, largest)


@dataclass(frozen=True)
class Buckets:
    """The batch sizes calls are padded to; empty: calls run at their own size."""

    sizes: tuple[int, ...] = ()

    @classmethod
    def of(cls, settings: RunnerSettings) -> Buckets:
        if not settings.compiles:
            return cls()
        return cls(tuple(settings.compile_batch_sizes or default_sizes(largest_call(settings))))

    def chunks(self, rows: int) -> list[tuple[int, int, int]]:
        """(first row, real rows, rows with padding) of each call serving ``rows`` rows."""
        if not self.sizes:
            return [(0, rows, rows)]
        largest, found, start = self.sizes[-1], [], 0
        while rows - start > largest:
            found.append((start, largest, largest))
            start += largest
        real = rows - start
        found.append((start, real, next(size for size in self.sizes if size >= real)))
        return found

    def run(
        self,
        kwargs: dict[str, Any],
        per_row: Sequence[str],
        call: Callable[[dict[str, Any], int, int], Any],
    ) -> list[tuple[Any, bool]]:
        """Serve the rows of diffusers arguments ``kwargs`` (``per_row`` names the lists
        with one entry per row, ``generator`` among them) in calls of bucket sizes:
        ``call(arguments, index, count)`` makes the call ``index`` of ``count``.
        Returns (image, nsfw) per real row, in order; padding rows are dropped."""
        rows = len(kwargs["generator"])
        plan = self.chunks(rows)
        found: list[tuple[Any, bool]] = []
        for index, (start, real, padded) in enumerate(plan):
            chunk = dict(kwargs)
            for name in per_row:
                values = kwargs[name][start : start + real]
                if name == "generator":
                    device = values[-1].device
                    values += [torch.Generator(device=device).manual_seed(PADDING_SEED) for _ in range(padded - real)]
                else:
                    values += [values[-1]] * (padded - real)
                chunk[name] = values
            output = call(chunk, index, len(plan))
            images = output.images
            pictures = to_pixels(images[:real])
            nsfw = list(getattr(output, "nsfw_content_detected", None) or [False] * padded)[:real]
            found += [(picture, bool(flag)) for picture, flag in zip(pictures, nsfw, strict=True)]
        return found


def allow_bucket_graphs(buckets: Buckets, sizes: int = 1) -> None:
    """Let dynamo keep a graph per shape warm-up compiles: each bucket, with and without
    guidance (the denoiser sees 2x the rows), at each of the ``sizes`` compiled image
    sizes (settings.compile_sizes). Past the limit (8 by default) dynamo would stop
    compiling the function and run it eagerly."""
    import torch._dynamo

    graphs = len({*buckets.sizes, *(2 * size for size in buckets.sizes)}) * max(1, sizes)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * graphs + 8)
