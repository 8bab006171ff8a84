#!/usr/bin/env python3
"""Load simulation: replica counts following a burst of queued requests (docs/scaling.md).

    .venv/bin/python hack/sim_autoscaling.py                       # defaults below
    .venv/bin/python hack/sim_autoscaling.py --min 0 --burst 40    # from zero

The real operator runs against the emulated API server (tests/operator/fakecluster.py)
with KEDA's resources installed; it reconciles an InferencePipeline with
spec.autoscaling into a ScaledObject, as in a cluster. The rest is simulated, in
simulated seconds:

- requests: a steady rate plus one burst; each takes --service seconds of GPU time,
  one at a time per replica (no batching), each replica's queue bounded by
  --max-queue (beyond it: 503 with Retry-After, and the client retries then); while
  no replica is ready they wait at the interceptor (scale to zero);
- Prometheus + KEDA + its HPA: every --poll seconds the sum of the queue depths (the
  operator's query) gives ceil(sum / targetQueueDepth) replicas, with the HPA's 10%
  tolerance, its default scale-up limit (double or +4 per period), the scale-down
  stabilisation window from the spec, and KEDA's 0 <-> 1 activation; the result is
  written to the pipeline's scale subresource, exactly what KEDA's HPA does;
- the Deployment controller and kubelet: the operator's Deployment replicas become
  pods, ready --cold-start seconds after they are created; a removed pod finishes
  what it holds.

It prints one row per --every seconds and a summary, and exits non-zero when the
operator did not carry a scale decision to the Deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # the emulator: tests.operator.fakecluster

NS = "sim"
NAME = "burst"
PIPELINE = f"/apis/kubediffusers.io/v1alpha1/namespaces/{NS}/inferencepipelines"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"


@dataclass
class Pod:
    created: float
    ready_at: float
    queue: list[float] = field(default_factory=list)  # remaining GPU seconds of each request, head running
    terminating: bool = False

    def ready(self, now: float) -> bool:
        return now >= self.ready_at and not self.terminating


@dataclass
class Hpa:
    """KEDA's HPA for an AverageValue external metric, as documented by Kubernetes and KEDA."""

    target: float
    min_replicas: int
    max_replicas: int
    stabilization: float
    concurrency: int
    history: list[tuple[float, int]] = field(default_factory=list)

    def desired(self, now: float, current: int, metric: float, pending: int) -> int:
        if current == 0:  # KEDA's activation: 0 -> 1 on any activity, the HPA takes over from 1
            return 1 if metric > 0 or pending > 0 else 0
        raw = math.ceil(metric / self.target)
        if self.min_replicas == 0:  # the external-push trigger: requests open at the interceptor
            raw = max(raw, math.ceil(pending / self.concurrency))
        if abs(metric / (self.target * current) - 1) <= 0.1:  # the HPA's tolerance
            raw = current
        raw = min(raw, max(2 * current, current + 4))  # default scale-up policy per period
        raw = max(self.min_replicas if self.min_replicas > 0 else 1, min(self.max_replicas, raw))
        self.history.append((now, raw))
        self.history = [(t, r) for t, r in self.history if now - t <= self.stabilization]
        wanted = max(r for _, r in self.history)  # scale down only to the highest recent recommendation
        if self.min_replicas == 0 and metric == 0 and pending == 0 and now - max((t for t, r in self.history if r > 1), default=-1e9) > self.stabilization:
            return 0 if wanted <= 1 else wanted  # KEDA's cooldown to zero (cooldownPeriod == stabilisation here)
        return wanted


async def run(args: argparse.Namespace) -> int:
    import kmock
    import kopf
    import yaml

    import kubediffusers.operator.handlers  # noqa: F401  (registers the handlers with kopf)
    from kubediffusers.operator.runtime import Runtime
    from kubediffusers.operator.settings import OperatorSettings
    from tests.operator.fakecluster import FakeCluster, register_keda, register_resources

    async with FakeCluster() as cluster, kmock.Server(cluster):
        register_resources(cluster)
        register_keda(cluster)
        tmp = tempfile.mkdtemp(prefix="kd-sim-")
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.url).rstrip("/")}}],
            "users": [{"name": "sim", "user": {"token": "sim"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "sim", "namespace": NS}}],
            "current-context": "kmock",
        }
        Path(tmp, "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        os.environ["KUBECONFIG"] = str(Path(tmp, "kubeconfig"))
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        settings = OperatorSettings(standalone=True, resync_seconds=5, retry_seconds=0.1, liveness_endpoint=None, log_level="warning")
        stop, ready = threading.Event(), threading.Event()
        coro = kopf.operator(clusterwide=True, memo=kopf.Memo(runtime=Runtime(settings)), stop_flag=stop, ready_flag=ready)
        thread = threading.Thread(target=asyncio.run, args=(coro,), daemon=True)
        thread.start()
        if not await asyncio.to_thread(ready.wait, 30):
            print("sim: the operator did not start", file=sys.stderr)
            return 1

        async def call(method: str, path: str, body: Any = None) -> Any:
            headers = {"Content-Type": "application/json" if method == "POST" else "application/merge-patch+json"}
            async with cluster.request(method, path, json=body, headers=headers) as response:
                if response.status >= 400:
                    raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
                return await response.json()

        def stored(resource: str, name: str) -> dict[str, Any] | None:
            try:
                found = cluster.objects[resource, NS, name]
            except KeyError:
                return None
            return None if found.deleted else found.raw

        autoscaling = {
            "minReplicas": args.min,
            "maxReplicas": args.max,
            "targetQueueDepth": args.target,
            "scaleDownStabilizationSeconds": int(args.stabilization),
            "pollingIntervalSeconds": int(args.poll),
            "prometheusAddress": "http://prometheus.monitoring:9090",
        }
        spec = {"task": "text-to-image", "model": {"id": "stabilityai/sdxl-turbo"}, "replicas": max(args.min, 1) if args.min else 0, "autoscaling": autoscaling}
        await call(
            "POST",
            PIPELINE,
            {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": NAME, "namespace": NS}, "spec": spec},
        )

        async def deployment_replicas(want: int | None, timeout: float = 10.0) -> tuple[int, float]:
            started = time.monotonic()
            while True:
                dep = stored("apps/v1/deployments", NAME)
                have = ((dep or {}).get("spec") or {}).get("replicas")
                if have is not None and (want is None or have == want):
                    return int(have), time.monotonic() - started
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"the operator did not carry replicas={want} to the Deployment in {timeout}s (it has {have})")
                await asyncio.sleep(0.01)

        try:
            return await simulate(args, spec, call, stored, deployment_replicas)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 15)


async def simulate(args: argparse.Namespace, spec: dict[str, Any], call: Any, stored: Any, deployment_replicas: Any) -> int:
    current, _ = await deployment_replicas(spec["replicas"])
    deadline = time.monotonic() + 10
    while (so := stored("keda.sh/v1alpha1/scaledobjects", NAME)) is None:
        if time.monotonic() > deadline:
            print("sim: the operator made no ScaledObject", file=sys.stderr)
            return 1
        await asyncio.sleep(0.02)
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    print(f"# pipeline {NS}/{NAME}: ScaledObject query {query}")
    print(
        f"# service {args.service:g}s/request, maxQueueSize {args.max_queue}, cold start {args.cold_start:g}s, steady {args.rate:g} req/s, burst {args.burst} at t={args.burst_at:g}s, "
        f"targetQueueDepth {args.target:g}, replicas {args.min}..{args.max}, poll {args.poll:g}s, scale-down window {args.stabilization:g}s"
    )
    hpa = Hpa(args.target, args.min, args.max, args.stabilization, math.ceil(args.target + 1))
    pods: list[Pod] = [Pod(-1e9, -1e9) for _ in range(current)]  # the initial replicas are warm
    pending: list[float] = []  # at the interceptor, no replica ready
    arrived = done = 0
    waits: list[float] = []
    enqueued: dict[int, float] = {}
    reactions: list[float] = []
    peak = (0, 0.0)
    drained_at: float | None = None
    print(
        f"{'t(s)':>6} {'arrived':>8} {'done':>6} {'queued':>7} {'in-flight':>9} {'retrying':>8} {'pending':>8} {'spec.replicas':>13} {'deployment':>10} {'ready':>6}"
    )
    carry = 0.0
    ids = 0
    queue_ids: dict[int, list[int]] = {}
    pending_ids: list[int] = []
    dt = 1.0
    retries: list[tuple[float, int]] = []
    rejected = 0
    steps = int(args.duration / dt)
    for step in range(steps + 1):
        now = step * dt
        # Arrivals: steady rate, plus the burst.
        carry += args.rate * dt
        count = int(carry)
        carry -= count
        if abs(now - args.burst_at) < dt / 2:
            count += args.burst
        offers = []
        for _ in range(count):
            arrived += 1
            ids += 1
            enqueued[ids] = now
            offers.append(ids)
        offers += [rid for due, rid in retries if due <= now]
        retries = [(due, rid) for due, rid in retries if due > now]
        for rid in offers:
            serving = [i for i, p in enumerate(pods) if p.ready(now)]
            if serving:
                target = min(serving, key=lambda i: len(pods[i].queue))
                queue = pods[target].queue
                if len(queue) - 1 >= args.max_queue:
                    # 503 with Retry-After (the runner's estimate); the client comes back then.
                    rejected += 1
                    retries.append((now + max(1, min(60, math.ceil(len(queue) * args.service))), rid))
                    continue
                queue.append(args.service)
                queue_ids.setdefault(id(pods[target]), []).append(rid)
            else:
                pending.append(args.service)
                pending_ids.append(rid)
        # A replica became ready: the interceptor forwards what it held.
        serving = [i for i, p in enumerate(pods) if p.ready(now)]
        while pending and serving:
            target = min(serving, key=lambda i: len(pods[i].queue))
            pods[target].queue.append(pending.pop(0))
            queue_ids.setdefault(id(pods[target]), []).append(pending_ids.pop(0))
        # GPU work.
        for pod in pods:
            if now < pod.ready_at:
                continue
            budget = dt
            while pod.queue and budget > 0:
                if pod.queue[0] == args.service:  # starts now
                    waits.append(now - enqueued[queue_ids[id(pod)][0]])
                spent = min(budget, pod.queue[0])
                pod.queue[0] -= spent
                budget -= spent
                if pod.queue[0] <= 1e-9:
                    pod.queue.pop(0)
                    queue_ids[id(pod)].pop(0)
                    done += 1
        pods = [p for p in pods if not (p.terminating and not p.queue)]
        queued = sum(max(0, len(p.queue) - 1) for p in pods)
        in_flight = sum(1 for p in pods if p.queue)
        # Prometheus + KEDA + HPA, every poll.
        if step % int(args.poll / dt) == 0 and step > 0:
            want = hpa.desired(now, current, float(queued), len(pending))
            if want != current:
                await call("PATCH", f"{PIPELINE}/{NAME}/scale", {"spec": {"replicas": want}})
                _, seconds = await deployment_replicas(want)
                reactions.append(seconds)
                current = want
        # Deployment controller + kubelet.
        have, _ = await deployment_replicas(None)
        live = [p for p in pods if not p.terminating]
        for _ in range(have - len(live)):
            pods.append(Pod(now, now + args.cold_start))
        for pod in sorted(live, key=lambda p: -p.created)[: max(0, len(live) - have)]:
            pod.terminating = True  # SIGTERM: finishes what it holds, takes nothing new
        ready_count = sum(1 for p in pods if p.ready(now))
        if ready_count > peak[0]:
            peak = (ready_count, now)
        if drained_at is None and now > args.burst_at and queued == 0 and not pending and not retries:
            drained_at = now
        if step % int(args.every / dt) == 0:
            spec_replicas = ((stored("kubediffusers.io/v1alpha1/inferencepipelines", NAME) or {}).get("spec") or {}).get("replicas")
            print(
                f"{now:6.0f} {arrived:8d} {done:6d} {queued:7d} {in_flight:9d} {len(retries):8d} {len(pending):8d} {spec_replicas!s:>13} {have:10d} {ready_count:6d}"
            )
    waits.sort()
    p50 = waits[len(waits) // 2] if waits else 0.0
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] if waits else 0.0
    print(
        f"# peak {peak[0]} ready replicas at t={peak[1]:.0f}s; queue drained at t={drained_at if drained_at is not None else 'never'}s; "
        f"wait before the GPU p50 {p50:.1f}s p99 {p99:.1f}s over {len(waits)} requests; {rejected} answers 503 + Retry-After (retried)"
    )
    if reactions:
        print(f"# the operator carried {len(reactions)} scale decisions from the CR to the Deployment, slowest in {max(reactions) * 1000:.0f} ms (wall)")
    return 0


def main() -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("kopf").setLevel(logging.CRITICAL)  # kopf's own chatter (e.g. when the emulator stops first)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", type=float, default=1.0, help="GPU seconds per request (default 1.0: SDXL-class)")
    parser.add_argument("--cold-start", type=float, default=30.0, help="seconds from pod creation to ready (default 30)")
    parser.add_argument("--rate", type=float, default=0.5, help="steady requests per second (default 0.5)")
    parser.add_argument("--burst", type=int, default=200, help="requests in the burst (default 200)")
    parser.add_argument("--burst-at", type=float, default=30.0, help="when the burst arrives (default t=30s)")
    parser.add_argument("--max-queue", type=int, default=16, help="runner.maxQueueSize: beyond it a replica answers 503 (default 16)")
    parser.add_argument("--target", type=float, default=4.0, help="targetQueueDepth (default 4)")
    parser.add_argument("--min", type=int, default=1, help="minReplicas (default 1)")
    parser.add_argument("--max", type=int, default=8, help="maxReplicas (default 8)")
    parser.add_argument("--poll", type=float, default=15.0, help="KEDA polling interval (default 15)")
    parser.add_argument("--stabilization", type=float, default=60.0, help="scale-down stabilisation window (default 60)")
    parser.add_argument("--duration", type=float, default=300.0, help="simulated seconds (default 300)")
    parser.add_argument("--every", type=float, default=15.0, help="print a row every so many seconds (default 15)")
    args = parser.parse_args()
    if args.min > args.max or args.service <= 0 or args.target <= 0 or args.poll < 1:
        parser.error("need 0 <= --min <= --max, --service > 0, --target > 0, --poll >= 1")
    try:
        return asyncio.run(run(args))
    except RuntimeError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
