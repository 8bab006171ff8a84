"""Every Hub call with connect/read timeouts, and a record of the calls in flight.

huggingface_hub 2.x sends everything through one shared ``httpx2.Client`` made by
its client factory, whose default has ``timeout=None``; and ``model_info``,
``list_repo_tree`` (inside ``snapshot_download``) pass ``timeout=None``
explicitly, which in httpx means *no timeout at all*. So a client-level default is
not enough: :class:`_HubClient` writes the fetcher's timeouts into every request
it sends (redirect hops inherit them), whatever the caller asked. It also keeps
the requests in flight, so that the overall deadline can say what the fetch was
waiting for. Proxies from the environment still apply (the transport is httpx's).

hf_xet transfers do not go through httpx: the overall deadline covers them.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import httpx2

from .redact import mask_url


@dataclass(frozen=True)
class InFlight:
    method: str
    url: str
    started: float

    def describe(self, now: float | None = None) -> str:
        waited = (now if now is not None else time.monotonic()) - self.started
        return f"{describe_call(self.method, self.url)} for {waited:.0f}s"


class InFlightRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, InFlight] = {}
        self._ids = itertools.count()

    def begin(self, method: str, url: str) -> int:
        key = next(self._ids)
        with self._lock:
            self._calls[key] = InFlight(method, url, time.monotonic())
        return key

    def end(self, key: int) -> None:
        with self._lock:
            self._calls.pop(key, None)

    def oldest(self) -> InFlight | None:
        with self._lock:
            return min(self._calls.values(), key=lambda c: c.started, default=None)


IN_FLIGHT = InFlightRegistry()


def describe_call(method: str, url: str) -> str:
    """``GET http://hub/api/models/o/n/tree/<sha> (the file listing)``, credentials masked."""
    path = unquote(urlsplit(url).path)
    if "/api/models/" in path and "/revision/" in path:
        what = "resolving the revision"
    elif "/api/models/" in path and "/tree/" in path:
        what = "the file listing"
    elif "/resolve/" in path:
        what = "file " + path.split("/resolve/", 1)[1].partition("/")[2]
    else:
        what = ""
    return f"{method} {mask_url(url)}" + (f" ({what})" if what else "")


def file_of(url: str) -> str | None:
    """The repository path of a ``/resolve/<rev>/<path>`` URL, if it is one."""
    path = unquote(urlsplit(url).path)
    if "/resolve/" not in path:
        return None
    return path.split("/resolve/", 1)[1].partition("/")[2] or None


class _HubClient(httpx2.Client):
    def __init__(self, *, enforced: httpx2.Timeout, registry: InFlightRegistry, **kwargs: object) -> None:
        super().__init__(timeout=enforced, **kwargs)  # type: ignore[arg-type]
        self._enforced = enforced.as_dict()
        self._registry = registry

    def send(self, request: httpx2.Request, **kwargs: object) -> httpx2.Response:
        request.extensions["timeout"] = dict(self._enforced)  # replaces the caller's (often None: no timeout)
        key = self._registry.begin(request.method, str(request.url))
        try:
            return super().send(request, **kwargs)  # type: ignore[arg-type]
        finally:
            self._registry.end(key)


def install(*, connect: float, read: float) -> None:
    """Make huggingface_hub's shared client one with these timeouts on every request."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    timeout = httpx2.Timeout(connect=connect, read=read, write=read, pool=connect)

    def factory() -> httpx2.Client:
        # the same as huggingface_hub's default_client_factory, plus the timeouts
        return _HubClient(
            enforced=timeout,
            registry=IN_FLIGHT,
            event_hooks={"request": [hf_request_event_hook]},
            follow_redirects=True,
        )

    set_client_factory(factory)
