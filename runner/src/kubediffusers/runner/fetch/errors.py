"""Failures of the fetcher, each turned into one line and one exit code.

The line is ``<Reason>: <what happened and what to do>``. It is printed to stderr
and written to the container's termination-message file, where the operator reads
it (the reason before the first colon is a stable CamelCase word it can put in a
condition's ``reason``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

EXIT_OK = 0
EXIT_FAILED = 1  # anything not listed below
EXIT_INVALID_CONFIG = 2
EXIT_NOT_FOUND = 3  # repository, revision or file not found
EXIT_UNAUTHORIZED = 4  # 401 / 403, gated or private
EXIT_DISK = 5  # disk full, storage not writable
EXIT_UNREACHABLE = 6  # connection errors or 5xx after the retries
EXIT_NO_WEIGHTS = 7  # the repository has no usable safetensors (for the variant)
EXIT_LOCK_TIMEOUT = 8
EXIT_DEADLINE = 9  # the whole fetch took longer than KUBEDIFFUSERS_FETCH_DEADLINE_SECONDS
EXIT_INTEGRITY = 10  # a file's sha256 differs from the Hub's


class FetchError(Exception):
    """A failure the fetcher explains in one line."""

    def __init__(self, reason: str, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code

    def line(self) -> str:
        return one_line(f"{self.reason}: {self.message}")


class ConfigError(FetchError):
    def __init__(self, message: str) -> None:
        super().__init__("InvalidConfiguration", message, EXIT_INVALID_CONFIG)


def one_line(text: str, limit: int = 1000) -> str:
    """Collapse whitespace (newlines included) so the text is a single line, and bound its length."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything in its ``__cause__``/``__context__`` chain, each once."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def find_errno(exc: BaseException, *codes: int) -> OSError | None:
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in codes:
            return e
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of the first huggingface_hub HTTP error in the chain, if any."""
    from huggingface_hub.errors import HfHubHTTPError

    for e in causes(exc):
        if isinstance(e, HfHubHTTPError) and e.response is not None:
            return e.response.status_code
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the whole step may help: network trouble or the Hub answering 5xx/429/408."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, FetchError) or any(isinstance(e, OfflineModeIsEnabled) for e in causes(exc)):
        return False
    if find_errno(exc, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM) is not None:
        return False
    for e in causes(exc):
        if isinstance(e, (httpx2.TransportError, ConnectionError, TimeoutError)) and not isinstance(e, httpx2.UnsupportedProtocol):
            return True
        if isinstance(e, HfHubHTTPError) and e.response is not None:
            return e.response.status_code in (408, 429) or e.response.status_code >= 500
    return False
