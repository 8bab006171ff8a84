"""Counting torch.compile compilations after the runner reported ready.

Warm-up compiles every shape requests will have (pipelines.buckets); a
compilation after ready is one it missed (an image size warm-up did not run,
a guard it did not foresee) and cost a request seconds to minutes. Dynamo
calls its compile-start callbacks once per frame it compiles (nested
compilations once), on whichever thread compiles; the model holder installs
this one when warm-up is done, so earlier compilations are not counted.
Only dynamo's own compilations count (not CUDA graph recordings).

Once ready, the holder also holds torch to the graphs warm-up compiled
(``UncompiledWatch``), so that nothing compiles in the request path and every
call that misses them is seen. A call at an image size warm-up did not compile
runs under the stance ``eager_on_recompile``: dynamo runs a compiled function's
cached graph when its guards pass and the plain Python function when none
does, never compiling (torch._dynamo.eval_frame: "run mode"); the runner
counts it (kubediffusers_uncompiled_calls_total{reason="size"}). Every other
call runs under ``fail_on_recompile``: a guard warm-up did not foresee (a
batch shape, a dtype) raises instead of silently running eagerly, and the
call is run again under ``eager_on_recompile``, counted with reason="shape"
and logged. The stance is one module-global of dynamo, read each time a
compiled region is entered; every compiled call runs on the inference thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)

# Distinct uncompiled sizes logged (one line each); past it they are only counted.
MAX_LOGGED_SIZES = 256
# What dynamo's RuntimeError says under the fail_on_recompile stance (torch._dynamo.eval_frame).
RECOMPILE_REFUSED = "stance is 'fail_on_recompile'"

T = TypeVar("T")


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

            with contextlib.suppress(ValueError):  # torch._dynamo.reset() clears the callbacks too
                torch._dynamo.callback_handler.remove_start_callback(self)
            self._installed = False


class UncompiledWatch:
    """After ready: no compiling (the compiler stance), and calls that miss the graphs warm-up
    compiled counted in ``counter`` (kubediffusers_uncompiled_calls_total, label reason)."""

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
            torch.compiler.set_stance("fail_on_recompile")
            self._installed = True

    def remove(self) -> None:
        import torch

        if self._installed:
            torch.compiler.set_stance("default")  # process-wide: tests start many runners in one process
            self._installed = False

    def run(self, size: tuple[int, int], call: Callable[[], T]) -> T:
        """``call`` (one pipeline call at ``size``, width and height) on the compiled graphs, or,
        where it misses them, uncompiled (eagerly) and counted; from the start when the size is
        not a compiled one, else after the guard that failed (the call is run again from the start)."""
        if not self._installed:
            return call()
        import torch

        if size not in self.sizes:
            self._count_size(size)
        else:
            try:
                return call()
            except RuntimeError as exc:
                if RECOMPILE_REFUSED not in str(exc):
                    raise
                self.counter.labels(reason="shape").inc()
                log.warning("a call at %dx%d missed the graphs warm-up compiled (%s); run again uncompiled", *size, str(exc).splitlines()[0])
        with torch.compiler.set_stance("eager_on_recompile"):
            return call()

    def _count_size(self, size: tuple[int, int]) -> None:
        self.counter.labels(reason="size").inc()
        if size not in self._seen and len(self._seen) < MAX_LOGGED_SIZES:
            self._seen.add(size)
            compiled = ", ".join(f"{w}x{h}" for w, h in sorted(self.sizes))
            log.warning(
                "%dx%d was not compiled at warm-up (compiled: %s): calls at this size run uncompiled (eagerly); add it to compile.sizes",
                *size,
                compiled,
            )
