#!/usr/bin/env python3
"""Long reliability runs; their figures are recorded in docs/reliability.md.

    .venv/bin/python hack/reliability.py fuzz     [--examples 1000] [--seed N]
    .venv/bin/python hack/reliability.py overload [--clients 256] [--rounds 10]
    .venv/bin/python hack/reliability.py soak     [--requests 3000] [--task text-to-image]
    .venv/bin/python hack/reliability.py storm    [--pipelines 300] [--restarts 1]
    .venv/bin/python hack/reliability.py hostile  [--flood-mib 256] [--sockets 2000] [--floods 20]
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


def hostile(args: argparse.Namespace) -> bool:
    """Hostile clients and shutdown (issue 12): peak memory under a header flood and
    an unknown-key flood, connections held under an idle-socket flood, slow
    readers cut, and the drain's times."""
    import json
    import signal
    import threading

    import httpx

    from tests.reliability.hostile import unknown_key_flood
    from tests.reliability.sockets import connect, flood, read_answer

    MiB = 1024 * 1024
    ok = True

    def peak_during(runner: RunnerProcess, action: object) -> tuple[int, object]:
        """(peak RSS growth in bytes, action's result) while ``action()`` runs."""
        base = runner.sample().rss
        peak = base
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, runner.sample().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = action()  # type: ignore[operator]
        finally:
            done.set()
            sampler.join()
        return peak - base, result

    env = {"KUBEDIFFUSERS_MAX_CONNECTIONS": "1000", "KUBEDIFFUSERS_LOG_LEVEL": "warning"}
    with RunnerProcess(MODELS, "text-to-image", env=env) as runner:
        print("## hostile clients (text-to-image runner, defaults but the cheap limits)")
        for name, head, line in (
            ("header lines", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Pad: " + b"a" * 1000 + b"\r\n"),
            ("endless header value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", b"a" * 65536),
            ("endless URL", b"GET /healthz?", b"a" * 65536),
        ):

            def attack(head: bytes = head, line: bytes = line) -> tuple[int, bytes]:
                with connect(runner) as sock:
                    sent = flood(sock, head, line, args.flood_mib * MiB)
                    return sent, read_answer(sock)[:40]

            grown, (sent, answer) = peak_during(runner, attack)  # type: ignore[misc]
            status_line = answer.split(b"\r\n")[0].decode()
            print(f"{name}: server took {sent / MiB:.2f} MiB of {args.flood_mib} MiB, answered {status_line!r}, peak RSS +{grown / MiB:.1f} MiB")
            ok &= answer.startswith(b"HTTP/1.1 431") and grown < 64 * MiB

        body = json.dumps({f"k{i}": 0 for i in range(1_350_000)}).encode()
        started = time.monotonic()
        grown, r = peak_during(
            runner, lambda: httpx.post(runner.url + "/text-to-image", content=body, headers={"Content-Type": "application/json"}, timeout=120)
        )
        print(
            f"unknown-key flood ({len(body) / MiB:.0f} MiB, 1.35 M keys): {r.status_code} in {time.monotonic() - started:.2f}s, answer {len(r.content)} bytes, peak RSS +{grown / MiB:.1f} MiB"
        )  # type: ignore[attr-defined]
        ok &= r.status_code == 413  # type: ignore[attr-defined]
        worst, unknown = unknown_key_flood()
        probes: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.monotonic()
                try:
                    answered = httpx.get(runner.url + "/healthz", timeout=5).status_code == 200
                except httpx.HTTPError:
                    answered = False
                probes.append(time.monotonic() - started if answered else float("inf"))
                time.sleep(0.02)

        def floods() -> list[tuple[int, int, float]]:
            answers = []
            for _ in range(args.floods):
                started = time.monotonic()
                r = httpx.post(runner.url + "/text-to-image", content=worst, headers={"Content-Type": "application/json"}, timeout=120)
                answers.append((r.status_code, len(r.content), time.monotonic() - started))
            return answers

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            grown, answers = peak_during(runner, floods)
        finally:
            done.set()
            prober.join()
        times = sorted(took for _, _, took in answers)  # type: ignore[attr-defined]
        print(
            f"the worst body inside the 1 MiB JSON limit ({len(worst)} bytes, {unknown} unknown keys) x{args.floods}: "
            f"{sorted({status for status, _, _ in answers})} in {times[len(times) // 2]:.2f}s (median; slowest {times[-1]:.2f}s), "  # type: ignore[attr-defined]
            f"answer {max(size for _, size, _ in answers)} bytes, peak RSS +{grown / MiB:.1f} MiB; "  # type: ignore[attr-defined]
            f"/healthz meanwhile x{len(probes)}: slowest {max(probes):.3f}s, median {sorted(probes)[len(probes) // 2]:.3f}s"
        )
        ok &= all(status == 422 and size < 16 * 1024 for status, size, _ in answers) and max(probes) < 5  # type: ignore[attr-defined]

        before = runner.sample().fds
        sockets = []
        for _ in range(args.sockets):
            try:
                sockets.append(connect(runner))
            except OSError as exc:
                print(f"the client ran out of sockets after {len(sockets)}: {exc}")
                break
        time.sleep(0.5)
        held = runner.sample().fds - before
        probes = []
        for _ in range(20):
            t0 = time.monotonic()
            status = httpx.get(runner.url + "/readyz", timeout=10).status_code
            probes.append((status, time.monotonic() - t0))
        good = runner.good_request().status_code
        for sock in sockets:
            sock.close()
        worst = max(t for _, t in probes)
        print(
            f"idle-socket flood: {len(sockets)} sockets opened, server holds {held} more fds; /readyz {sorted({s for s, _ in probes})} (slowest {worst * 1000:.0f} ms); a generation -> {good}"
        )
        ok &= held <= 1000 + 2 and all(s == 200 for s, _ in probes) and good == 200

    env = {"KUBEDIFFUSERS_MAX_STEPS": "1000", "KUBEDIFFUSERS_LOG_LEVEL": "warning"}
    for drain_seconds, steps in ((120, 40), (3, 1000)):
        with RunnerProcess(MODELS, "text-to-image", env={**env, "KUBEDIFFUSERS_DRAIN_SECONDS": str(drain_seconds)}) as runner:
            results: list[int] = []

            def post(steps: int = steps, results: list[int] = results) -> None:
                results.append(httpx.post(runner.url + "/text-to-image", json={"prompt": "x", "num_inference_steps": steps}, timeout=300).status_code)

            threads = [threading.Thread(target=post) for _ in range(3)]
            for thread in threads:
                thread.start()
            while httpx.get(runner.url + "/health").json()["queue_depth"] < 2:
                time.sleep(0.05)
            readers = []
            for _ in range(3):  # clients that never read their answers
                sock = connect(runner, rcvbuf=4096)
                sock.settimeout(0.5)
                try:
                    for _ in range(2000):
                        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    pass
                readers.append(sock)
            started = time.monotonic()
            assert runner.proc is not None
            runner.proc.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join()
            code = runner.proc.wait(120)
            took = time.monotonic() - started
            for sock in readers:
                sock.close()
            print(
                f"drain {drain_seconds}s, 1 running + 2 queued x {steps} steps, 3 slow readers: answers {sorted(results)}, exit {code} {took:.1f}s after SIGTERM"
            )
            ok &= code == 0 and (results == [200] * 3 if drain_seconds > 100 else set(results) == {503})
    return ok


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
    p = sub.add_parser("hostile")
    p.add_argument("--flood-mib", type=int, default=256, help="bytes of request head each flood sends")
    p.add_argument("--sockets", type=int, default=2000, help="idle sockets the connection flood opens")
    p.add_argument("--floods", type=int, default=20, help="worst-case JSON bodies inside the 1 MiB cap, one after another")
    sub.add_parser("all")
    args = parser.parse_args()
    commands = {"fuzz": fuzz, "overload": overload, "soak": soak, "storm": storm, "hostile": hostile}
    if args.command == "all":
        defaults = {
            "fuzz": argparse.Namespace(examples=1000, seed=None),
            "overload": argparse.Namespace(clients=256, rounds=10, queue=16),
            "soak": argparse.Namespace(requests=3000, warmup=100, task="text-to-image"),
            "storm": argparse.Namespace(pipelines=300, seed=1),
            "hostile": argparse.Namespace(flood_mib=256, sockets=2000, floods=20),
        }
        results = {name: commands[name](ns) for name, ns in defaults.items()}
        print({name: "ok" if ok else "FAILED" for name, ok in results.items()})
        return 0 if all(results.values()) else 1
    ok = commands[args.command](args)
    print("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
