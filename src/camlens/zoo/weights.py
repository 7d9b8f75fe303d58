"""Weight files in their usual shapes, and loading them strictly with a one-line error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import MissingWeights, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn


def local_state_dict(
    name: str, weights: Any, weight_path: str | None, random_weights: bool
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The state dict of torchvision model ``name`` and where it came from, never downloaded: ``weight_path``,
    else (unless ``random_weights``: ``(None, "random")``) the checkpoint of ``weights`` (a torchvision weights
    enum member) in the local torch cache; with neither, :class:`~camlens.errors.MissingWeights` names the file
    and the folder to put it in."""
    from torch.hub import get_dir

    from camlens.zoo.names import RANDOM

    if weight_path is not None:
        return read_state_dict(weight_path), weight_path
    if random_weights:
        return None, RANDOM
    cached = Path(get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if cached.is_file():
        return read_state_dict(cached), str(cached)
    raise MissingWeights(name, cached.name, str(cached.parent))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, a checkpoint with ``state_dict``/``model``, DataParallel prefixes."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weight file {path} does not exist")
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice would cut our one line in two
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise UsageError(
                f"{path} is not a plain weight file: it holds pickled Python objects or code, which camlens "
                "refuses to run; save the weights alone with torch.save(model.state_dict(), FILE)"
            ) from None
        raise UsageError(f"{path} is not a PyTorch weight file (it cannot be unpickled)") from None
    except Exception as error:  # noqa: BLE001 - any other loading failure means "not a weight file"
        raise UsageError(f"{path} is not a PyTorch weight file ({_first_line(error)})") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UsageError(f"{path} holds no state dict of tensors")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module.") :]: v for k, v in loaded.items()}
    return dict(loaded)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, network: str, *, assign: bool = False
) -> None:
    """Load ``state`` strictly, or raise one line saying which keys do not fit.

    ``assign=True`` makes the tensors of ``state`` the model's own (for a model built on the ``meta``
    device); they are cast to the model's dtypes and made contiguous first, as a copy into fresh parameters
    would leave them.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} of another shape ({', '.join(mismatched[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        raise UsageError(f"the weights in {source} do not fit {network}: keys {'; '.join(parts)}")
    if assign:
        state = {k: v.to(own[k].dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, assign=assign)
