"""The fetch ends, whatever happens: an overall deadline, SIGTERM and SIGINT.

Both end the process the same way, from any thread and whatever the main thread
is blocked in (a socket read, a lock, huggingface_hub's thread pool, which would
otherwise be joined at exit): one line on stderr and in the termination message,
this process's temporary files removed, then ``os._exit`` with a non-zero code.
Raising into the main thread instead would leave the download threads running
and the interpreter waiting for them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from .errors import EXIT_DEADLINE, one_line
from .http import IN_FLIGHT
from .partials import remove_own_partials
from .redact import REDACT

EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell would report
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class Guard:
    """Process-wide state of the fetch, for the one way out."""

    def __init__(self) -> None:
        self.termination_log: Path | None = None
        self.write_termination: Callable[[Path | None, str], None] | None = None
        self.activity = "starting"  # what the main thread is doing, for the deadline's message
        self.locked_repos: set[Path] = set()  # repo folders whose fetch lock this process really holds
        self._once = threading.Lock()
        self._timer: threading.Timer | None = None
        self._deadline_s: float | None = None
        self._previous: dict[int, object] = {}

    # -- what the fetch is doing
    def doing(self, activity: str) -> None:
        self.activity = activity

    def waiting_for(self) -> str:
        call = IN_FLIGHT.oldest()
        if call is not None:
            return f"{self.activity}: waiting for an answer to {call.describe()}"
        return self.activity

    # -- the ways out
    def arm(self, deadline_s: float | None) -> None:
        """Start the deadline clock (from now) and take over SIGTERM/SIGINT."""
        self._deadline_s = deadline_s
        if deadline_s is not None:
            self._timer = threading.Timer(deadline_s, self._deadline)
            self._timer.daemon = True
            self._timer.start()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._signal)

    def disarm(self) -> None:
        """The fetch is over (main() returns): no deadline any more, signals as before."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()
        self.locked_repos.clear()

    def _deadline(self) -> None:
        self.abort(
            f"DeadlineExceeded: the fetch did not finish within {self._deadline_s:g}s (KUBEDIFFUSERS_FETCH_DEADLINE_SECONDS); it was {self.waiting_for()}",
            EXIT_DEADLINE,
        )

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTERM:
            self.abort(f"Terminated: SIGTERM (pod deleted or evicted) while {self.activity}; partial files removed", EXIT_TERMINATED)
        self.abort(f"Interrupted: the fetch was interrupted while {self.activity}; partial files removed", EXIT_INTERRUPTED)

    def abort(self, line: str, code: int) -> None:
        """Report, clean up and end the process now (never returns)."""
        if not self._once.acquire(blocking=False):
            return  # another way out is already under way
        try:
            line = REDACT(one_line(line))
            try:
                os.write(2, (line + "\n").encode("utf-8", "replace"))
            except OSError:
                pass
            if self.write_termination is not None:
                self.write_termination(self.termination_log, line)
            remove_own_partials(self.locked_repos)
        finally:
            os._exit(code)


GUARD = Guard()
