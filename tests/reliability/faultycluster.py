"""KMock's emulated API server (tests/operator/fakecluster.py) with an unreliable
network and control plane, for the operator's requests only (those carrying the
kubeconfig's token; the tests' own requests carry none):

* 500 Internal Server Error before the request is served;
* 500 after it was served (the write happened, the answer was lost);
* 409 Conflict on writes;
* a hang longer than the operator's client timeout (then 504);
* watch streams ended by an in-stream ``ERROR 410 Gone`` (resource version too old),
  as a real API server does, or simply cut.

It also counts successful creations per object (by POST or by a server-side apply
of a missing object), so a test can tell that no object was ever created twice.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web

from tests.operator.fakecluster import FakeCluster

TOKEN = "storm-token"


@dataclass
class FaultRates:
    error_500: float = 0.04
    lost_answer: float = 0.03  # writes only
    conflict: float = 0.04  # writes only
    hang: float = 0.02  # the operator's own client only (kopf's requests have a 60 s timeout)
    watch_gone: float = 0.25  # of watch requests
    watch_cut: float = 0.10
    hang_seconds: float = 1.5


@dataclass
class FaultLog:
    injected: Counter[str] = field(default_factory=Counter)
    created: Counter[tuple[str, str]] = field(default_factory=Counter)  # (collection path, name) -> successful POSTs
    requests: int = 0


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message}
    return aiohttp.web.json_response(body, status=code)


class FaultyCluster(FakeCluster):
    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rates = FaultRates()
        self.faults_on = False
        self.rng = random.Random(seed)
        # The first two watches after the faults start are a 410 Gone and a cut, then chance decides:
        # a storm makes only a few watch requests, and whether the shared draws gave each kind one
        # depended on how requests interleaved (the storm test failed so, now and then, on a busy machine).
        self.watch_script = ["watch 410 Gone", "watch cut"]
        self.log = FaultLog()

    async def _handle(self, request: Any) -> Any:
        # KMock keeps every request and, for each new one, scans that whole history to
        # match reactions: quadratic, minutes for a storm of thousands of requests. The
        # storm needs no history, so each request leaves it once answered.
        try:
            return await super()._handle(request)
        finally:
            for index, seen in enumerate(self._requests):
                if seen is request:
                    del self._requests[index]
                    break

    async def _store(self, request: Any, key: Any, new: dict[str, Any], *, created: bool) -> None:
        await super()._store(request, key, new, created=created)
        if created and request.method == "PATCH":  # created by a server-side apply (POSTs are counted in _serve)
            self.log.created[request.url.path.rsplit("/", 1)[0], new["metadata"]["name"]] += 1

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        ours = TOKEN in raw.headers.get("Authorization", "")
        if ours:
            self.log.requests += 1
        if ours and self.faults_on:
            injected = await self._fault(raw)
            if injected is not None:
                return injected
        response = await self._serve(raw)
        return response

    async def _serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        response = await super().__call__(raw)
        if raw.method == "POST" and response.status in (200, 201):
            try:
                name = (json.loads(await raw.read()) or {}).get("metadata", {}).get("name")
            except ValueError:
                name = None
            if name:
                self.log.created[raw.path, name] += 1
        return response

    async def _fault(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        r, rates = self.rng.random(), self.rates
        if raw.query.get("watch") in ("true", "1"):
            if self.watch_script:
                r = rates.watch_gone / 2 if self.watch_script.pop(0) == "watch 410 Gone" else rates.watch_gone + rates.watch_cut / 2
            if r < rates.watch_gone:
                self.log.injected["watch 410 Gone"] += 1
                return await self._gone_stream(raw)
            if r < rates.watch_gone + rates.watch_cut:
                self.log.injected["watch cut"] += 1
                response = aiohttp.web.StreamResponse()
                await response.prepare(raw)
                await asyncio.sleep(self.rng.uniform(0.0, 0.5))
                await response.write_eof()
                return response
            return None
        write = raw.method in ("POST", "PATCH", "PUT", "DELETE")
        ours_client = raw.headers.get("User-Agent", "").startswith("kubediffusers-operator")
        edges = [("500", rates.error_500, True), ("lost answer", rates.lost_answer, write), ("409", rates.conflict, write), ("hang", rates.hang, ours_client)]
        for kind, rate, applies in edges:
            if r < rate:
                if not applies:
                    return None
                self.log.injected[kind] += 1
                if kind == "500":
                    return _status(500, "InternalError", "injected: etcdserver: request timed out")
                if kind == "lost answer":
                    await self._serve(raw)
                    return _status(500, "InternalError", "injected: the write happened, the answer was lost")
                if kind == "409":
                    return _status(409, "Conflict", "injected: the object has been modified; please apply your changes to the latest version")
                await asyncio.sleep(rates.hang_seconds)
                return _status(504, "Timeout", "injected: hung")
            r -= rate
        return None

    async def _gone_stream(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))
        gone = {
            "type": "ERROR",
            "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"},
        }
        await response.write(json.dumps(gone).encode() + b"\n")
        await response.write_eof()
        return response
