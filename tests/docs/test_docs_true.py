"""The docs stay true: links resolve, manifests in them are valid, the README
keeps its two commands first and its quickstart matches the example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kubediffusers.operator.spec import InferencePipelineSpec

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "charts").rglob("README.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = [
        target for target in LINK.findall(doc.read_text()) if not target.startswith(("http://", "https://", "mailto:")) and not (doc.parent / target).exists()
    ]
    assert not broken, f"{doc.name} links to missing files: {broken}"


def yaml_blocks(text: str) -> list[dict]:
    blocks = re.findall(r"```ya?ml\n(.*?)```", text, flags=re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if isinstance(doc, dict)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pipeline_manifests_in_docs_are_valid(doc: Path) -> None:
    for manifest in yaml_blocks(doc.read_text()):
        if manifest.get("kind") == "InferencePipeline" and "spec" in manifest and "task" in manifest["spec"]:
            InferencePipelineSpec.model_validate(manifest["spec"])


def test_readme_starts_with_the_two_commands_and_quotes_the_quickstart_example() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert first_block and first_block.group(1).startswith("make run") and "make test" in first_block.group(1)
    example = yaml.safe_load((ROOT / "examples" / "sd-turbo.yaml").read_text())
    quoted = [m for m in yaml_blocks(text) if m.get("kind") == "InferencePipeline"]
    assert quoted and quoted[0]["spec"] == example["spec"], "README's manifest differs from examples/sd-turbo.yaml"
