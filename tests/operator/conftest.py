"""Fixtures for the operator tests (no cluster: builders, KMock, CLI)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for "import ophelpers"

from ophelpers import CRD_PATH, to_jsonschema


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def crd_validator(crd: dict[str, Any]) -> Any:
    import jsonschema

    schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft202012Validator(to_jsonschema(schema))
