"""docs/api.md is generated from the docstrings (docs/gen_api.py) and must match the code as it is now."""

import importlib.util
from pathlib import Path

import camlens

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_api_reference_is_the_generated_one():
    generated = _generator().render()
    committed = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/api.md is stale: run python docs/gen_api.py and commit docs/api.md"


def test_every_top_level_name_is_documented_with_a_docstring():
    gen = _generator()
    text = gen.render()
    for name in camlens.__all__:
        assert f"### `camlens.{name}`" in text
        obj = getattr(camlens, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), f"camlens.{name} has no docstring"


def test_reprs_are_stable_across_processes():
    gen = _generator()
    assert gen.value_repr(frozenset({"b", "a"})) == "frozenset({'a', 'b'})"
    assert gen.value_repr(object()) == "<object object>"
    assert gen.signature_text("f", lambda self, x, *, y=1: None) == "f(x, *, y=1)"
