#!/usr/bin/env python3
"""Write runner/openapi.json (all task routes). tests/runner/test_openapi.py
fails when the committed file is stale: run `make openapi` after API changes."""

from pathlib import Path

from kubediffusers.runner.openapi import render_openapi

TARGET = Path(__file__).resolve().parent.parent / "runner" / "openapi.json"

if __name__ == "__main__":
    TARGET.write_text(render_openapi())
    print(f"wrote {TARGET}")
