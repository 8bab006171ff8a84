"""Overload and soak against a real runner process, measured from outside
(psutil on the server's pid). Shared by the tests and hack/reliability.py."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.reliability.fuzz import check_response
from tests.reliability.procs import RunnerProcess, Sample, png_bytes

GOOD_T2I = {"prompt": "a lighthouse at dusk", "num_inference_steps": 1}


def wait_idle(runner: RunnerProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(runner.url + "/health", timeout=5).json()
        if health["activity"] == "Idle" and health["queue_depth"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the runner did not become idle")


def settle(runner: RunnerProcess, seconds: float = 1.0) -> Sample:
    """Sample after connections closed and the server's keep-alive timers ran out."""
    wait_idle(runner)
    gc.collect()  # ours: closes client sockets the test process still holds
    time.sleep(seconds)
    return runner.sample()


def single_latency(runner: RunnerProcess, n: int = 5) -> float:
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            started = time.perf_counter()
            assert client.post(runner.url + "/text-to-image", json=GOOD_T2I).status_code == 200
            times.append(time.perf_counter() - started)
    return statistics.median(times)


@dataclass
class OverloadReport:
    clients: int
    statuses: Counter[int]
    accepted_latencies: list[float]
    rejected_latencies: list[float]
    problems: list[str]
    retry_after: set[str]
    single: float
    before: Sample
    peak_rss: int
    after: Sample
    seconds: float

    def lines(self) -> list[str]:
        acc, rej = sorted(self.accepted_latencies), sorted(self.rejected_latencies)
        pct = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")  # noqa: E731
        return [
            f"clients: {self.clients}, statuses: {dict(sorted(self.statuses.items()))}, wall {self.seconds:.1f}s",
            f"one request alone: {self.single * 1000:.0f} ms",
            f"accepted latency: p50 {pct(acc, 0.5):.2f}s p99 {pct(acc, 0.99):.2f}s max {max(acc, default=0):.2f}s",
            f"503 latency: p50 {pct(rej, 0.5) * 1000:.0f} ms max {max(rej, default=0) * 1000:.0f} ms, Retry-After {sorted(self.retry_after)}",
            f"RSS before {self.before.rss / 2**20:.1f} MiB, peak {self.peak_rss / 2**20:.1f} MiB, after {self.after.rss / 2**20:.1f} MiB",
            f"threads {self.before.threads} -> {self.after.threads}, fds {self.before.fds} -> {self.after.fds}",
        ]


async def _overload(runner: RunnerProcess, clients: int, rounds: int) -> tuple[list[tuple[int, float, httpx.Response]], int]:
    peak = runner.sample().rss
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, runner.sample().rss)
            await asyncio.sleep(0.05)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    results: list[tuple[int, float, httpx.Response]] = []
    async with httpx.AsyncClient(limits=limits, timeout=300) as client:
        start = asyncio.Event()

        async def one() -> None:
            await start.wait()
            for _ in range(rounds):
                started = time.perf_counter()
                r = await client.post(runner.url + "/text-to-image", json=GOOD_T2I)
                results.append((r.status_code, time.perf_counter() - started, r))

        watcher = asyncio.create_task(watch())
        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        await asyncio.sleep(0.2)  # every client is waiting at the gate
        start.set()
        await asyncio.gather(*tasks)
        done.set()
        await watcher
    return results, peak


def overload(runner: RunnerProcess, clients: int, rounds: int = 1) -> OverloadReport:
    single = single_latency(runner)
    before = settle(runner)
    started = time.monotonic()
    results, peak = asyncio.run(_overload(runner, clients, rounds))
    seconds = time.monotonic() - started
    problems = [f"{status}: {p}" for status, _, r in results for p in check_response(r)]
    problems += [f"unexpected {status}: {r.text[:200]}" for status, _, r in results if status not in (200, 503)]
    retry_after = {r.headers.get("retry-after", "") for status, _, r in results if status == 503}
    after = settle(runner)
    return OverloadReport(
        clients=clients * rounds,
        statuses=Counter(status for status, _, _ in results),
        accepted_latencies=[t for status, t, _ in results if status == 200],
        rejected_latencies=[t for status, t, _ in results if status == 503],
        problems=problems,
        retry_after=retry_after,
        single=single,
        before=before,
        peak_rss=peak,
        after=after,
        seconds=seconds,
    )


# ---- soak


@dataclass
class SoakReport:
    requests: int
    warmup: int
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    samples: list[tuple[int, Sample]] = field(default_factory=list)  # (requests done, sample)
    seconds: float = 0.0

    @property
    def baseline(self) -> Sample:
        return self.samples[0][1]

    @property
    def final(self) -> Sample:
        return self.samples[-1][1]

    @property
    def rss_growth(self) -> float:
        return self.final.rss / self.baseline.rss - 1

    def lines(self) -> list[str]:
        rss = [s.rss for _, s in self.samples]
        return [
            f"requests: {self.requests} after {self.warmup} warm-up, {self.seconds:.1f}s ({self.requests / self.seconds:.1f}/s), answers: {dict(sorted(self.statuses.items()))}",
            f"RSS after warm-up {self.baseline.rss / 2**20:.1f} MiB, max {max(rss) / 2**20:.1f} MiB, final {self.final.rss / 2**20:.1f} MiB: growth {self.rss_growth * 100:+.2f}%",
            f"threads {self.baseline.threads} -> {self.final.threads} (max {max(s.threads for _, s in self.samples)}), "
            f"fds {self.baseline.fds} -> {self.final.fds} (max {max(s.fds for _, s in self.samples)})",
        ]


def soak_requests(runner: RunnerProcess) -> list[tuple[str, Any]]:
    """One cycle of the traffic mix: mostly generations, some refusals, health, metrics, an async job."""
    if runner.task == "text-to-image":
        gen = ("POST", {"json": {**GOOD_T2I, "seed": 3}})
        bad = ("POST", {"json": {"prompt": "x", "height": 65}})
    else:
        gen = ("POST", {"data": {"prompt": "x", "num_inference_steps": "2"}, "files": {"image": ("a.png", png_bytes(), "image/png")}})
        bad = ("POST", {"data": {"prompt": "x"}, "files": {"image": ("a.png", b"not an image", "image/png")}})
    return [gen, gen, gen, bad, ("GET /health", None), gen, ("GET /metrics", None), gen, ("ASYNC", gen[1]), gen]


def soak(runner: RunnerProcess, requests: int, warmup: int = 50, sample_every: int = 50, new_connection_every: int = 7) -> SoakReport:
    """``requests`` requests after ``warmup`` more, one at a time; a new connection every few
    requests so that connection setup and teardown are soaked too."""
    report = SoakReport(requests=requests, warmup=warmup)
    mix = soak_requests(runner)
    route = f"{runner.url}/{runner.task}"
    client = httpx.Client(timeout=120)

    def send(i: int) -> None:
        nonlocal client
        if i % new_connection_every == 0:
            client.close()
            client = httpx.Client(timeout=120)
        kind, kwargs = mix[i % len(mix)]
        if kind == "GET /health":
            r = client.get(runner.url + "/health")
        elif kind == "GET /metrics":
            r = client.get(runner.url + "/metrics")
        elif kind == "ASYNC":
            r = client.post(route, params={"async": "true"}, **kwargs)
            if r.status_code == 202:
                location = r.headers["location"]
                for _ in range(600):
                    state = client.get(runner.url + location).json()
                    if state["status"] in ("done", "failed"):
                        break
                    time.sleep(0.01)
                r = client.get(runner.url + location + "/result")
        else:
            r = client.post(route, **kwargs)
        report.statuses[f"{kind.split()[0]} {r.status_code}"] += 1
        report.problems += check_response(r)
        expected = 400 if kwargs is mix[3][1] else 200
        if r.status_code != expected:
            report.problems.append(f"request {i} ({kind}): {r.status_code} {r.text[:200]}")

    try:
        for i in range(warmup):
            send(i)
        report.statuses.clear()
        client.close()
        client = httpx.Client(timeout=120)
        report.samples.append((0, settle(runner)))
        started = time.monotonic()
        for i in range(requests):
            send(i)
            if (i + 1) % sample_every == 0 and i + 1 < requests:
                report.samples.append((i + 1, runner.sample()))
        report.seconds = time.monotonic() - started
    finally:
        client.close()
    report.samples.append((requests, settle(runner)))
    return report
