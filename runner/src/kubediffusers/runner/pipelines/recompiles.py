"""Counting torch.compile compilations after the runner reported ready.

Warm-up compiles every shape requests will have (pipelines.buckets); a
compilation after ready is one it missed (an image size warm-up did not run,
a guard it did not foresee) and cost a request seconds to minutes. Dynamo
calls its compile-start callbacks once per frame it compiles (nested
compilations once), on whichever thread compiles; the model holder installs
this one when warm-up is done, so earlier compilations are not counted.
Only dynamo's own compilations count (not CUDA graph recordings).

Once ready, the holder also sets torch's compiler stance to
``eager_on_recompile`` (``UncompiledWatch``): dynamo then runs a compiled
function's cached graph when its guards pass and the plain Python function
when none does, never compiling (torch._dynamo.eval_frame: the stance turns
every compiled region's callback into "run mode"). The stance is one
module-global of dynamo, read each time a compiled region is entered, so
setting it once on the inference thread holds for every later call. A request
at a size warm-up did not compile is then slower, not minutes late; the
runner sees its size is not a compiled one and counts it
(kubediffusers_uncompiled_calls_total).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)

# Distinct uncompiled sizes logged (one line each); past it they are only counted.
MAX_LOGGED_SIZES = 256


class RecompileWatch:
    """A dynamo compile-start callback feeding ``counter`` (kubediffusers_recompilations_total)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._installed = False

    def __call__(self, args: Any) -> None:
        from torch._dynamo.callback import CallbackTrigger

        if getattr(args, "callback_trigger", CallbackTrigger.DYNAMO) is CallbackTrigger.DYNAMO:
            self.counter.inc()
            log.warning("torch.compile is compiling after ready (%s): a shape warm-up did not cover", getattr(args, "compile_id", "?"))

    def install(self) -> None:
        import torch._dynamo

        if not self._installed:
            torch._dynamo.callback_handler.register_start_callback(self)
            self._installed = True

    def remove(self) -> None:
        if self._installed:  # importing dynamo to remove nothing cost a runner that never compiled seconds of CPU at shutdown
            import torch._dynamo

            torch._dynamo.callback_handler.remove_start_callback(self)
            self._installed = False


class UncompiledWatch:
    """After ready: no compiling (the compiler stance), and calls at sizes warm-up did not
    compile counted in ``counter`` (kubediffusers_uncompiled_calls_total, label reason)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.sizes: frozenset[tuple[int, int]] = frozenset()
        self._seen: set[tuple[int, int]] = set()
        self._installed = False

    def install(self, sizes: Iterable[tuple[int, int]]) -> None:
        """Hold torch to the graphs compiled so far; ``sizes``: the (width, height) pairs they cover."""
        import torch

        self.sizes = frozenset(sizes)
        if not self._installed:
            torch.compiler.set_stance("eager_on_recompile")
            self._installed = True

    def remove(self) -> None:
        import torch

        if self._installed:
            torch.compiler.set_stance("default")  # process-wide: tests start many runners in one process
            self._installed = False

    def observe(self, size: tuple[int, int]) -> None:
        """A call at ``size`` (width, height) is about to run."""
        if not self._installed or size in self.sizes:
            return
        self.counter.labels(reason="size").inc()
        if size not in self._seen and len(self._seen) < MAX_LOGGED_SIZES:
            self._seen.add(size)
            compiled = ", ".join(f"{w}x{h}" for w, h in sorted(self.sizes))
            log.warning(
                "%dx%d was not compiled at warm-up (compiled: %s): calls at this size run uncompiled (eagerly); add it to compile.sizes",
                *size,
                compiled,
            )
