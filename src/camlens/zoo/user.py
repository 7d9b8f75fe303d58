"""A user's own model: ``path/to/file.py:factory``, optionally with a weight file."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from camlens.errors import UsageError
from camlens.zoo.network import Network
from camlens.zoo.weights import fit_state_dict, read_state_dict

if TYPE_CHECKING:
    from torch import nn


def load_user_model(spec: str, weight_path: str | None) -> Network:
    """Import ``file.py``, call ``factory()`` and check it returns a module (or a ``(module, tokenizer)`` pair for
    an image-text model: the tokenizer maps ``list[str]`` to token ids; or a ``(module, adapter)`` pair for a
    detector camlens does not know: a :class:`camlens.detection.DetectorAdapter`); load ``weight_path`` if given."""
    from torch import nn

    from camlens.detection import DetectorAdapter

    file, _, factory_name = spec.rpartition(":")
    if not file or not factory_name:
        raise UsageError(f"--model takes path/to/file.py:factory, got {spec!r}")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    module_name = f"camlens_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - user code: report it in one line
        raise UsageError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    factory: Callable[[], nn.Module] | None = getattr(module, factory_name, None)
    if not callable(factory):
        raise UsageError(f"{path} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as error:  # noqa: BLE001 - user code: report it in one line
        raise UsageError(f"{spec} raised {type(error).__name__}: {' '.join(str(error).split())[:200]}") from None
    tokenizer = adapter = None
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], DetectorAdapter):
        model, adapter = model  # a detector and how to read its boxes
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module) and callable(model[1]):
        model, tokenizer = model  # an image-text model and its tokenizer (list[str] -> token ids)
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"{spec} returned a {type(model).__name__}, not a torch.nn.Module (or a (module, tokenizer) pair); "
            "a detector may also come as (module, camlens.detection.DetectorAdapter)"
        )
    source = "as built by the factory"
    if weight_path is not None:
        fit_state_dict(model, read_state_dict(weight_path), weight_path, spec)
        source = weight_path
    # the factory is part of the name: two factories of one file write different files and table rows
    name = f"{Path(file).stem}-{factory_name}"
    return Network(name, model.eval(), (224, 224), labels=[], weights=source, tokenizer=tokenizer, adapter=adapter)
