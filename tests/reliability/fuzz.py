"""Fuzz a running runner from its own OpenAPI document with schemathesis.

Every operation the live server publishes (its task's route, the job routes,
health and metrics) gets ``max_examples`` generated cases in each generation
mode: positive (valid by the schema) and negative (invalid by the schema). Each
response is checked here, without raising inside hypothesis, so a run counts
every case and reports every failure instead of stopping (and shrinking) at the
first:

* no 5xx, except 503 with a Retry-After header (queue full, as documented);
* every 4xx/5xx body is exactly ``{"detail": {"msg": <str>, ...}}``, a 422 FastAPI's list
  ``{"detail": [{"loc", "msg", "type"}]}`` of at most 20 items (on PICO's routes, PICO's
  ``{"detail": <str>}`` instead of the first), and carries no traceback;
* the response arrives (a transport error means the server died or hung).

Explicit cases (``Explicit``: a request and the status it must get) run first,
through the same schemathesis calls and checks. They are what makes a bounded
run prove something every time: the drawn cases are deterministic
(``derandomize``) only for the same set of loaded modules, because Hypothesis
(since 6.131) also draws, 5% of the time per choice, constants it collects from
every module under the working directory in ``sys.modules``. The full suite
imports every test module at collection, so its draws differ from a run of the
fuzz tests alone (the multipart route drew its only two 200s alone and none in
the full suite's order).

Shared by tests/reliability/test_fuzz.py (bounded) and hack/reliability.py (long).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.reliability.procs import png_bytes

# Upload fields of the multipart routes. Random bytes are never an image, so in
# positive mode half the cases carry a real (small, random-sized) PNG instead, so
# that decoding, resizing and generation are fuzzed too, not just the refusal.
IMAGE_FIELDS = ("image", "mask_image")
PICO_PREFIX = "/api/v1/"


def with_real_images(strategy: Any) -> Any:
    def swap(drawn: tuple[Any, bool, int, int]) -> Any:
        case, real, width, height = drawn
        if real and isinstance(case.body, dict):
            for name in IMAGE_FIELDS:
                if name in case.body:
                    case.body[name] = png_bytes((width, height), (width, height, 99))
        return case

    return st.tuples(strategy, st.booleans(), st.integers(1, 96), st.integers(1, 96)).map(swap)


@dataclass(frozen=True)
class Explicit:
    """One request (``APIOperation.Case`` arguments) and the status it must get."""

    status: int
    case: dict[str, Any]
    why: str


@dataclass
class RouteReport:
    label: str
    mode: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    accepted_invalid: list[str] = field(default_factory=list)  # negative cases answered 2xx (not a failure: see docs)
    seconds: float = 0.0
    note: str = ""

    def line(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        extra = f" ({self.note})" if self.note else ""
        return f"{self.label:<32} {self.mode:<8} {self.cases:>6} cases {self.seconds:>7.1f}s  {{{statuses}}} failures: {len(self.failures)}{extra}"


def path_of(response: Any) -> str:
    """The request's path, from a requests or an httpx response."""
    request = response.request
    return str(request.path_url) if hasattr(request, "path_url") else str(request.url.path)


def validation_list(detail: Any) -> bool:
    """FastAPI's 422 detail (livepeer's HTTPValidationError), bounded to 20 items without 'input' or 'ctx'."""
    if not (isinstance(detail, list) and 1 <= len(detail) <= 20):
        return False
    return all(
        isinstance(item, dict)
        and set(item) == {"loc", "msg", "type"}
        and isinstance(item["loc"], list)
        and all(isinstance(p, str | int) for p in item["loc"])
        and isinstance(item["msg"], str)
        and isinstance(item["type"], str)
        for item in detail
    )


def check_response(response: requests.Response) -> list[str]:
    """What is wrong with one answer (empty when it is fine)."""
    problems = []
    status = response.status_code
    if status >= 500 and not (status == 503 and response.headers.get("retry-after")):
        problems.append(f"server error {status}")
    if "Traceback" in response.text:
        problems.append("a traceback in the body")
    if status >= 400:
        try:
            body = response.json()
        except ValueError:
            return [*problems, f"{status} body is not JSON: {response.text[:200]!r}"]
        detail = body.get("detail") if isinstance(body, dict) else None
        if status == 422:
            shaped = validation_list(detail)
        elif path_of(response).startswith(PICO_PREFIX):
            # PICO's routes answer in PICO's shapes (docs/runner-api.md): {"detail": str}.
            shaped = isinstance(detail, str)
        else:
            shaped = isinstance(detail, dict) and isinstance(detail.get("msg"), str)
        if not (isinstance(body, dict) and set(body) == {"detail"} and shaped):
            problems.append(f"{status} body is not the error shape: {response.text[:200]!r}")
    return problems


def describe(case: Any) -> str:
    parts = [f"{case.method} {case.formatted_path}"]
    for name in ("query", "headers", "body"):
        value = getattr(case, name, None)
        if value:
            parts.append(f"{name}={str(value)[:300]}")
    return " ".join(parts)


def run_explicit(operation: Any, base_url: str, explicit: list[Explicit], session: requests.Session) -> RouteReport:
    """The explicit cases of one operation, each checked like a drawn one and for its status."""
    report = RouteReport(label=f"{operation.method.upper()} {operation.path}", mode="explicit")
    started = time.monotonic()
    for one in explicit:
        case = operation.Case(**one.case)
        report.cases += 1
        try:
            response = case.call(base_url=base_url, session=session, timeout=120)
        except requests.RequestException as exc:
            report.failures.append(f"no answer ({type(exc).__name__}: {exc}) to {one.why}: {describe(case)}")
            continue
        report.statuses[response.status_code] += 1
        if response.status_code != one.status:
            report.failures.append(f"{one.why}: {response.status_code}, not {one.status}: {response.text[:200]!r}")
        for problem in check_response(response):
            report.failures.append(f"{problem} for {one.why}")
    report.seconds = time.monotonic() - started
    return report


def fuzz_operation(operation: Any, base_url: str, mode: GenerationMode, max_examples: int, seed: int | None, session: requests.Session) -> RouteReport:
    report = RouteReport(label=f"{operation.method.upper()} {operation.path}", mode=mode.value)
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE and "multipart/form-data" in operation.get_request_payload_content_types():
        strategy = with_real_images(strategy)

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected, not raised
        suppress_health_check=list(HealthCheck),
        derandomize=seed is None,
    )
    @given(case=strategy)
    def one(case: Any) -> None:
        report.cases += 1
        try:
            response = case.call(base_url=base_url, session=session, timeout=120)
        except requests.RequestException as exc:
            report.failures.append(f"no answer ({type(exc).__name__}: {exc}) to {describe(case)}")
            return
        report.statuses[response.status_code] += 1
        for problem in check_response(response):
            report.failures.append(f"{problem} for {describe(case)}")
        if mode is GenerationMode.NEGATIVE and response.status_code < 300 and len(report.accepted_invalid) < 20:
            report.accepted_invalid.append(describe(case))

    test = hypothesis_seed(seed)(one) if seed is not None else one
    started = time.monotonic()
    try:
        test()
    except Exception as exc:  # hypothesis could not generate: say so
        if report.cases == 0 and mode is GenerationMode.NEGATIVE and type(exc).__name__ == "Unsatisfiable":
            report.note = "no parameters to make invalid"
        else:
            report.note = f"generation stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    report.seconds = time.monotonic() - started
    return report


def fuzz_server(
    base_url: str,
    *,
    max_examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    only: tuple[str, ...] | None = None,
    seed: int | None = None,
    examples_for: dict[str, int] | None = None,
    explicit: dict[str, list[Explicit]] | None = None,
) -> list[RouteReport]:
    """Fuzz every operation of the live schema (or those whose path is in ``only``).

    ``examples_for`` overrides ``max_examples`` per path (e.g. fewer for /metrics);
    ``explicit`` gives a path's explicit cases, run before its drawn ones.
    """
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    reports = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if only is not None and operation.path not in only:
                continue
            count = (examples_for or {}).get(operation.path, max_examples)
            if (explicit or {}).get(operation.path):
                reports.append(run_explicit(operation, base_url, (explicit or {})[operation.path], session))
            for mode in modes:
                reports.append(fuzz_operation(operation, base_url, mode, count, seed, session))
    return reports
