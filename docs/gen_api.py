"""Write docs/api.md, the API reference, from the public modules' docstrings and signatures.

    python docs/gen_api.py            # rewrite docs/api.md
    python docs/gen_api.py --check    # exit 1 when docs/api.md differs from what the code gives

Standard library only (``inspect``). The public API is each listed module's ``__all__`` where it has one,
else the functions and classes the module defines whose names do not start with ``_``.
tests/unit/test_api_docs.py fails when the committed file is stale: run this script after changing a
public docstring or signature.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import re
import sys
import types
from pathlib import Path, PurePath
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "api.md"
REPO = OUTPUT.parent.parent

# the public modules, in the order the reference lists them
MODULES = (
    "camlens",
    "camlens.explainers",
    "camlens.names",
    "camlens.catalog",
    "camlens.auto",
    "camlens.detection",
    "camlens.segmentation",
    "camlens.text",
    "camlens.metrics",
    "camlens.run",
    "camlens.zoo",
    "camlens.viz",
    "camlens.device",
    "camlens.precision",
    "camlens.progress",
    "camlens.errors",
    "camlens.serve",
)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj):`~?([^`]+)`")
_SHORT = 100  # a constant's value is shown when its repr is at most this long


def public_names(module: types.ModuleType) -> list[str]:
    """The module's public names: ``__all__`` in its order, else what it defines without a leading ``_``."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    own = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__:
            own.append(name)
    return own


def value_repr(value: Any) -> str:
    """A repr that is the same in every process: no memory addresses, sets sorted."""
    if isinstance(value, set | frozenset):
        inner = ", ".join(sorted(value_repr(v) for v in value))
        return f"{type(value).__name__}({{{inner}}})" if value else f"{type(value).__name__}()"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
        return getattr(value, "__qualname__", getattr(value, "__name__", type(value).__name__))
    if isinstance(value, PurePath) and value.is_absolute():
        # a path inside the checkout is written relative to it: the page is the same in every clone
        try:
            return f"<checkout>/{value.relative_to(REPO).as_posix()}"
        except ValueError:
            pass
    return _ADDRESS.sub("", repr(value))


def annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):  # postponed annotations (``from __future__ import annotations``)
        return annotation
    return _ADDRESS.sub("", inspect.formatannotation(annotation))


def signature_text(name: str, obj: Any) -> str:
    """``name(param: type = default, ...) -> type``, one parameter per line when long."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    parts, marker_star = [], False
    previous_kind = None
    params = list(sig.parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    for param in params:
        if param.kind is param.POSITIONAL_ONLY:
            pass
        elif previous_kind is param.POSITIONAL_ONLY:
            parts.append("/")
        if param.kind is param.KEYWORD_ONLY and not marker_star:
            parts.append("*")
            marker_star = True
        text = param.name
        if param.kind is param.VAR_POSITIONAL:
            text, marker_star = "*" + text, True
        elif param.kind is param.VAR_KEYWORD:
            text = "**" + text
        if param.annotation is not param.empty:
            text += ": " + annotation_text(param.annotation)
        if param.default is not param.empty:
            text += (" = " if param.annotation is not param.empty else "=") + value_repr(param.default)
        parts.append(text)
        previous_kind = param.kind
    if previous_kind is inspect.Parameter.POSITIONAL_ONLY:
        parts.append("/")
    returns = "" if sig.return_annotation is sig.empty else " -> " + annotation_text(sig.return_annotation)
    one_line = f"{name}({', '.join(parts)}){returns}"
    if len(one_line) <= 100:
        return one_line
    body = "".join(f"    {p},\n" for p in parts)
    return f"{name}(\n{body}){returns}"


def markdown_doc(doc: str | None) -> str:
    """A docstring as Markdown: Sphinx roles become code, doctest blocks become fenced ``pycon`` blocks."""
    if not doc:
        return "*(no docstring)*\n"
    doc = _ROLE.sub(r"`\1`", doc)
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            indent = len(line) - len(line.lstrip())
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i].lstrip())
                i += 1
            if out and out[-1].strip():
                out.append("")
            out += ["```pycon", *block, "```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip("\n") + "\n"


def class_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties the class itself defines (dataclass fields are in its signature)."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) or inspect.isfunction(value):
            members.append((name, value))
        elif isinstance(value, staticmethod | classmethod):
            members.append((name, value.__func__))
    return members


def render_object(module_name: str, name: str, obj: Any) -> str:
    qualified = f"{module_name}.{name}"
    if inspect.isclass(obj):
        kind = "dataclass" if dataclasses.is_dataclass(obj) else "class"
        if issubclass(obj, BaseException):
            kind = "exception"
        head = signature_text(name, obj).removesuffix(" -> None") if kind != "exception" else name
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        text = f"### `{qualified}`\n\n*{kind}*" + (f" ({', '.join(bases)})" if bases else "") + "\n\n"
        if kind != "exception":
            text += f"```python\n{head}\n```\n\n"
        text += markdown_doc(inspect.getdoc(obj) if obj.__doc__ else None)
        for member, value in class_members(obj):
            if isinstance(value, property):
                text += f"\n#### `{name}.{member}`\n\n*property*\n\n" + markdown_doc(inspect.getdoc(value))
            else:
                sig = signature_text(member, value)
                text += f"\n#### `{name}.{member}`\n\n```python\n{sig}\n```\n\n" + markdown_doc(inspect.getdoc(value))
        return text
    if callable(obj) and (inspect.isfunction(obj) or inspect.isbuiltin(obj) or hasattr(obj, "__wrapped__")):
        sig = signature_text(name, obj)
        return f"### `{qualified}`\n\n```python\n{sig}\n```\n\n" + markdown_doc(inspect.getdoc(obj))
    if isinstance(obj, types.ModuleType):
        return f"### `{qualified}`\n\n*module* `{obj.__name__}`: " + markdown_doc(_first_paragraph(obj.__doc__))
    # immutable values are shown when short; a registry (dict, list) may grow at run time: its type only
    shown = value_repr(obj)
    immutable = isinstance(obj, str | int | float | bool | tuple | frozenset | type(None))
    value = f"`{shown}`" if immutable and len(shown) <= _SHORT else f"a `{type(obj).__name__}`"
    if isinstance(obj, tuple | frozenset) and len(shown) > _SHORT:
        value += f" of {len(obj)}"
    return f"### `{qualified}`\n\n*constant*: {value}\n"


def _first_paragraph(doc: str | None) -> str:
    return (inspect.cleandoc(doc).split("\n\n")[0] if doc else "").replace("\n", " ") + "\n"


def render() -> str:
    """The whole reference, as the text of docs/api.md."""
    out = [
        "# API reference\n",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit by hand "
        "(tests/unit/test_api_docs.py checks it is current). The guides in `docs/guide/` show how the "
        "parts fit together.\n",
    ]
    modules = [importlib.import_module(name) for name in MODULES]
    out.append("## Modules\n")
    out += [f"- [`{m.__name__}`](#{m.__name__.replace('.', '')})" for m in modules]
    out.append("")
    for module in modules:
        out.append(f"## {module.__name__}\n")
        out.append(markdown_doc(inspect.getdoc(module)))
        for name in public_names(module):
            out.append(render_object(module.__name__, name, getattr(module, name)))
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python docs/gen_api.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
