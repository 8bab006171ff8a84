"""Counting torch.compile compilations after the runner reported ready.

Warm-up compiles every shape requests will have (pipelines.buckets); a
compilation after ready is one it missed (an image size warm-up did not run,
a guard it did not foresee) and cost a request seconds to minutes. Dynamo
calls its compile-start callbacks once per frame it compiles (nested
compilations once), on whichever thread compiles; the model holder installs
this one when warm-up is done, so earlier compilations are not counted.
Only dynamo's own compilations count (not CUDA graph recordings).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

log = logging.getLogger(__name__)


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
        import torch._dynamo

        if self._installed:
            torch._dynamo.callback_handler.remove_start_callback(self)
            self._installed = False
