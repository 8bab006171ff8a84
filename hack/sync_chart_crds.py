#!/usr/bin/env python3
"""Copy the CRDs in crds/ into the Helm chart's crds/ directory, byte for byte.

crds/ is the single source of truth (written by hack/gen_crd.py); Helm installs
the chart's copy before the templates. Run after regenerating the CRD:

    .venv/bin/python hack/sync_chart_crds.py          # copy
    .venv/bin/python hack/sync_chart_crds.py --check  # exit 1 when the copy differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "kubediffusers" / "crds"


def differences() -> list[str]:
    """What differs between crds/ and the chart's copy (empty when identical)."""
    source = {p.name: p.read_bytes() for p in SOURCE.glob("*.yaml")}
    copy = {p.name: p.read_bytes() for p in CHART_CRDS.glob("*.yaml")} if CHART_CRDS.is_dir() else {}
    problems = [f"charts/kubediffusers/crds/{name} is missing" for name in sorted(source.keys() - copy.keys())]
    problems += [f"charts/kubediffusers/crds/{name} is not in crds/" for name in sorted(copy.keys() - source.keys())]
    problems += [f"charts/kubediffusers/crds/{name} differs from crds/{name}" for name in sorted(source.keys() & copy.keys()) if source[name] != copy[name]]
    return problems


def sync() -> None:
    CHART_CRDS.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in SOURCE.glob("*.yaml")}
    for stale in CHART_CRDS.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    for path in SOURCE.glob("*.yaml"):
        (CHART_CRDS / path.name).write_bytes(path.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the chart's copy is identical")
    args = parser.parse_args()
    if args.check:
        problems = differences()
        for problem in problems:
            print(f"{problem}: run hack/sync_chart_crds.py", file=sys.stderr)
        return 1 if problems else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
