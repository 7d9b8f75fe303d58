"""Networks by name: the bundled default, torchvision and timm names, a user's ``file.py:factory``.

The names and aliases are plain constants (:mod:`camlens.zoo.names`, no torch import), so a command line
can offer them before any model code is loaded. :data:`SOURCES` is the table of where networks come from,
asked in order: the first source that knows a name builds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from camlens.errors import UnknownName, closest_names
from camlens.zoo.names import ALIASES as ALIASES
from camlens.zoo.names import BUNDLED_NETWORKS as BUNDLED_NETWORKS
from camlens.zoo.names import DEFAULT_NETWORK as DEFAULT_NETWORK
from camlens.zoo.names import RANDOM as RANDOM
from camlens.zoo.names import SEED_NETWORKS as SEED_NETWORKS
from camlens.zoo.network import Network


def list_networks() -> list[str]:
    """Names ``load_network`` accepts (torchvision classifiers and the bundled model; timm names too)."""
    from camlens.zoo.torchvision import torchvision_names

    return [*BUNDLED_NETWORKS, *torchvision_names()]


@dataclass(frozen=True)
class Source:
    """One place networks come from: the names it knows and how it builds one.

    ``knows(name)`` is the source's own spelling of ``name`` (``tf_efficientnet_lite0`` is the bundled
    ``efficientnet_lite0``, ``timm:vit_tiny_patch16_224`` is timm's ``vit_tiny_patch16_224``), or None;
    ``load(name, weight_path, offline, random_weights)`` builds it. Each imports its own code only when
    asked, so the bundled default imports neither torchvision nor timm.
    """

    what: str
    knows: Callable[[str], str | None]
    load: Callable[[str, str | None, bool, bool], Network]


def _knows_user(name: str) -> str | None:
    return name if ".py:" in name else None


def _load_user(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.user import load_user_model

    return load_user_model(name, weight_path)


def _knows_bundled(name: str) -> str | None:
    name = name.removeprefix("tf_") if name.removeprefix("tf_") in BUNDLED_NETWORKS else name
    return name if name in BUNDLED_NETWORKS else None


def _load_bundled(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.lite0 import load_lite

    return load_lite(name, weight_path)


def _knows_torchvision(name: str) -> str | None:
    from camlens.zoo.torchvision import torchvision_names

    return name if name in torchvision_names() else None


def _load_torchvision(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.torchvision import load_torchvision

    if random_weights and weight_path is None:
        return _random_torchvision(name)
    return load_torchvision(name, weight_path, offline)


def _knows_timm(name: str) -> str | None:
    from camlens.zoo.timm import is_timm_name

    name = name.removeprefix("timm:")
    return name if is_timm_name(name) else None


def _load_timm(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.timm import load_timm

    if random_weights and weight_path is None:
        return _random_timm(name)
    return load_timm(name, weight_path)


def _knows_segmenter(name: str) -> str | None:
    from camlens.zoo.segmenters import segmenter_names

    return name if name in segmenter_names() else None


def _load_segmenter(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.segmenters import load_segmenter

    return load_segmenter(name, weight_path, offline, random_weights)


def _knows_detector(name: str) -> str | None:
    from camlens.zoo.detectors import knows_detector

    return knows_detector(name)


def _load_detector(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.detectors import load_detector

    return load_detector(name, weight_path, offline, random_weights)


def _knows_open_clip(name: str) -> str | None:
    from camlens.zoo.clip import knows_open_clip

    return knows_open_clip(name)


def _load_open_clip(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    from camlens.zoo.clip import load_open_clip

    return load_open_clip(name, weight_path, offline, random_weights)


SOURCES: tuple[Source, ...] = (
    Source("a model factory in a user's file (file.py:factory)", _knows_user, _load_user),
    Source("bundled with its weights (camlens.zoo.lite0)", _knows_bundled, _load_bundled),
    Source("torchvision", _knows_torchvision, _load_torchvision),
    Source("torchvision segmentation (camlens.zoo.segmenters)", _knows_segmenter, _load_segmenter),
    Source("torchvision and ultralytics YOLO detectors (camlens.zoo.detectors)", _knows_detector, _load_detector),
    Source("open_clip architectures, open_clip:<arch> (camlens.zoo.clip)", _knows_open_clip, _load_open_clip),
    Source("timm", _knows_timm, _load_timm),
)


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
    name = ALIASES.get(name, name)
    for source in SOURCES:
        known = source.knows(name)
        if known is not None:
            return source.load(known, weight_path, offline, random_weights)
    suggestions = closest_names(name, list_networks(), 4)
    raise UnknownName(f"unknown network {name!r}; closest: {', '.join(suggestions)}")




def _random_torchvision(name: str) -> Network:
    import torchvision

    from camlens.zoo.network import imagenet_labels

    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    crop = preset.crop_size[0] if isinstance(preset.crop_size, list | tuple) else preset.crop_size
    model = torchvision.models.get_model(name, weights=None)
    categories = list(weights.meta.get("categories", []))  # e.g. a video network's Kinetics-400 classes
    classes = getattr(model, "num_classes", None)
    if classes is None:  # torchvision's video networks keep no num_classes: their last layer says
        sized = [getattr(m, "out_features", None) or getattr(m, "out_channels", None) for m in model.modules()]
        classes = next((int(c) for c in reversed(sized) if c), 1000)
    labels = imagenet_labels() if classes == 1000 else categories if len(categories) == classes else []
    return Network(name, model.eval(), (crop, crop), tuple(preset.mean), tuple(preset.std), labels, RANDOM)


def _random_timm(name: str) -> Network:
    import timm

    from camlens.zoo.network import IMAGENET_MEAN, IMAGENET_STD, imagenet_labels

    model = timm.create_model(name, pretrained=False)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    labels = imagenet_labels() if model.num_classes == 1000 else []
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return Network(name, model.eval(), size, mean, std, labels, RANDOM)


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
