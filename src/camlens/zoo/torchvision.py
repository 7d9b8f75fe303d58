"""torchvision classifiers by name, built exactly as torchvision builds its pretrained models.

Weights from ``weight_path``, else the local torch cache (``$TORCH_HOME/hub/checkpoints``), else a
download (skipped when offline).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import MissingWeights
from camlens.zoo.network import Network
from camlens.zoo.weights import fit_state_dict, read_state_dict

if TYPE_CHECKING:
    import torch


def torchvision_names() -> list[str]:
    """Every torchvision classification model name (images, and video: ``r3d_18``, ``s3d``, ...), sorted."""
    import torchvision
    import torchvision.models.video

    models = torchvision.models
    return sorted([*models.list_models(module=models), *models.list_models(module=models.video)])


def load_torchvision(name: str, weight_path: str | None, offline: bool) -> Network:
    """torchvision's classifier ``name`` with its weights, preprocessing and class names."""
    from unittest import mock

    import torchvision
    from torch.hub import get_dir

    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    crop = preset.crop_size[0] if isinstance(preset.crop_size, list | tuple) else preset.crop_size
    labels = list(weights.meta.get("categories", []))
    cached = Path(get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if weight_path is not None:
        state = read_state_dict(weight_path)
        source = weight_path
    elif cached.is_file():
        state = read_state_dict(cached)
        source = str(cached)
    elif offline:
        raise MissingWeights(name, cached.name, str(cached.parent))
    else:
        state = _download(weights, name, cached)
        source = weights.url

    def give(self: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return state

    # Build exactly as torchvision builds its pretrained model (e.g. inception_v3's transform_input and
    # aux head), with the state dict coming from our file instead of the network.
    with mock.patch.object(type(weights), "get_state_dict", give):
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except RuntimeError:
            model = None
    if model is None:
        model = torchvision.models.get_model(name, weights=None, num_classes=len(labels) or 1000)
        fit_state_dict(model, state, source, name)  # raises with the keys that do not fit
    return Network(name, model.eval(), (crop, crop), tuple(preset.mean), tuple(preset.std), labels, source)


def _download(weights: Any, name: str, cached: Path) -> dict[str, torch.Tensor]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    import contextlib
    import io

    try:  # torch.hub prints "Downloading: ..." even without progress: it reads as success when it fails
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # noqa: BLE001 - no network, refused, timed out: all mean "cannot be had"
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise MissingWeights(name, cached.name, str(cached.parent), download_error=reason) from None
    finally:
        socket.setdefaulttimeout(previous)
