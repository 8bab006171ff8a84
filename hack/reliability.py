#!/usr/bin/env python3
"""Long reliability runs; their figures are recorded in docs/reliability.md.

    .venv/bin/python hack/reliability.py fuzz     [--examples 1000] [--seed N]
    .venv/bin/python hack/reliability.py overload [--clients 256] [--rounds 10]
    .venv/bin/python hack/reliability.py soak     [--requests 3000] [--task text-to-image]
    .venv/bin/python hack/reliability.py storm    [--pipelines 300] [--restarts 1]
    .venv/bin/python hack/reliability.py all

Each runs the same code as the bounded tests in tests/reliability (real
`kubediffusers-runner` processes on tiny models; the real operator against KMock),
with bigger numbers, prints a report and exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "operator")]

from tests.reliability.procs import RunnerProcess  # noqa: E402

MODELS = ROOT / ".cache" / "models"


def fuzz(args: argparse.Namespace) -> bool:
    from tests.reliability.fuzz import fuzz_server

    ok = True
    for task in ("text-to-image", "image-to-image"):
        with RunnerProcess(MODELS, task, env={"KUBEDIFFUSERS_MAX_QUEUE_SIZE": "16"}) as runner:
            started = time.monotonic()
            reports = fuzz_server(runner.url, max_examples=args.examples, seed=args.seed)
            print(f"## {task}: {sum(r.cases for r in reports)} cases in {time.monotonic() - started:.0f}s")
            for report in reports:
                print(report.line())
                for failure in report.failures[:10]:
                    print("   FAIL", failure)
                for accepted in report.accepted_invalid[:3]:
                    print("   (invalid by the schema, answered 2xx)", accepted[:200])
            good = runner.good_request()
            print(f"afterwards: alive {runner.alive()}, a good request -> {good.status_code}, tracebacks in the log: {runner.output().count('Traceback')}")
            ok &= runner.alive() and good.status_code == 200 and not any(r.failures for r in reports) and "Traceback" not in runner.output()
    return ok


def overload(args: argparse.Namespace) -> bool:
    from tests.reliability.load import overload as run

    with RunnerProcess(MODELS, "text-to-image", env={"KUBEDIFFUSERS_MAX_QUEUE_SIZE": str(args.queue)}) as runner:
        report = run(runner, args.clients, rounds=args.rounds)
        print(f"## overload: queue {args.queue}, {args.clients} clients x {args.rounds} rounds")
        print("\n".join(report.lines()))
        for problem in report.problems[:10]:
            print("   FAIL", problem)
        bound = (args.queue + 1) * report.single * 4 + 2.0
        print(f"accepted latency bound {(args.queue + 1)} x one request x 4 + 2s = {bound:.2f}s")
        return (
            not report.problems
            and set(report.statuses) <= {200, 503}
            and max(report.accepted_latencies) < bound
            and report.after.rss <= report.before.rss * 1.05
            and runner.good_request().status_code == 200
        )


def soak(args: argparse.Namespace) -> bool:
    from tests.reliability.load import soak as run

    with RunnerProcess(MODELS, args.task) as runner:
        report = run(runner, args.requests, warmup=args.warmup, sample_every=max(50, args.requests // 20))
        print(f"## soak: {args.task}")
        print("\n".join(report.lines()))
        print("samples (requests: RSS MiB / threads / fds): " + ", ".join(f"{n}: {s.rss / 2**20:.1f}/{s.threads}/{s.fds}" for n, s in report.samples))
        for problem in report.problems[:10]:
            print("   FAIL", problem)
        return (
            not report.problems and report.rss_growth < 0.05 and report.final.threads <= report.baseline.threads and report.final.fds <= report.baseline.fds + 2
        )


def storm(args: argparse.Namespace) -> bool:
    import pytest

    from kubediffusers.operator.settings import OperatorSettings
    from tests.reliability.operator_harness import OperatorThread, faulty_cluster
    from tests.reliability.storm import run_storm

    async def main() -> bool:
        monkeypatch = pytest.MonkeyPatch()
        try:
            async with faulty_cluster(Path(tempfile.mkdtemp()), monkeypatch, seed=args.seed or 0) as cluster:
                settings = OperatorSettings(standalone=True, resync_seconds=5.0, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test")
                operator = OperatorThread(settings)
                try:
                    report = await run_storm(
                        cluster, operator, count=args.pipelines, updates=args.pipelines * 2 // 5, deletes=args.pipelines // 5, restart=True, timeout=600
                    )
                finally:
                    if operator.alive:
                        await operator.stop()
        finally:
            monkeypatch.undo()
        print(f"## storm: {args.pipelines} pipelines")
        print("\n".join(report.lines()))
        for problem in report.problems[:10] + report.duplicates[:10]:
            print("   FAIL", problem)
        return not report.problems and not report.duplicates and operator.crashed is None

    import logging

    logging.basicConfig(level=logging.CRITICAL)
    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fuzz")
    p.add_argument("--examples", type=int, default=1000, help="cases per operation and generation mode")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: derandomized)")
    p = sub.add_parser("overload")
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--queue", type=int, default=16)
    p = sub.add_parser("soak")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--task", default="text-to-image", choices=["text-to-image", "image-to-image"])
    p = sub.add_parser("storm")
    p.add_argument("--pipelines", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    sub.add_parser("all")
    args = parser.parse_args()
    commands = {"fuzz": fuzz, "overload": overload, "soak": soak, "storm": storm}
    if args.command == "all":
        defaults = {
            "fuzz": argparse.Namespace(examples=1000, seed=None),
            "overload": argparse.Namespace(clients=256, rounds=10, queue=16),
            "soak": argparse.Namespace(requests=3000, warmup=100, task="text-to-image"),
            "storm": argparse.Namespace(pipelines=300, seed=1),
        }
        results = {name: commands[name](ns) for name, ns in defaults.items()}
        print({name: "ok" if ok else "FAILED" for name, ok in results.items()})
        return 0 if all(results.values()) else 1
    ok = commands[args.command](args)
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
