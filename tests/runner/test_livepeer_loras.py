"""livepeer's ``loras`` format (a JSON object repository id -> weight), parsed by
runner/loras.py: what the LoRA work (issue 13) builds on."""

from __future__ import annotations

import pytest

from kubediffusers.runner import loras
from kubediffusers.runner.errors import InvalidInput


def test_livepeers_example_parses() -> None:
    # The example in livepeer's TextToImageParams.loras description.
    assert loras.parse('{ "latent-consistency/lcm-lora-sdxl": 1.0, "nerijs/pixel-art-xl": 1.2}') == {
        "latent-consistency/lcm-lora-sdxl": 1.0,
        "nerijs/pixel-art-xl": 1.2,
    }
    assert loras.parse("") == {} and loras.parse("  ") == {} and loras.parse("{}") == {}
    assert loras.parse('{"a/b": 0}') == {"a/b": 0.0}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("{not json", "unable to parse"),
        ('["a/b"]', "JSON object"),
        ('{"a/b": "strong"}', "must be a number"),
        ('{"a/b": -0.5}', "must be a number"),
        ('{"a/b": true}', "must be a number"),
        ('{"a/b": 1e400}', "must be a number"),
        ('{"../etc/passwd": 1}', "not a repository id"),
        ('{"a/1": 1, "a/2": 1, "a/3": 1, "a/4": 1, "a/5": 1}', "at most 4"),
    ],
)
def test_malformed_values_are_400(value: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        loras.parse(value)


def test_only_declared_adapters() -> None:
    loras.check({}, declared=())
    with pytest.raises(InvalidInput, match="no adapters are declared"):
        loras.check({"a/b": 1.0}, declared=())
    loras.check({"a/b": 1.0}, declared=("a/b", "c/d"))
    with pytest.raises(InvalidInput, match="declared: a/b"):
        loras.check({"x/y": 1.0}, declared=("a/b",))
