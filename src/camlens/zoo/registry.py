"""Networks by name: the bundled default, torchvision and timm names, a user's ``file.py:factory``.

The names and aliases here are plain constants (no torch import), so a command line can offer them
before any model code is loaded.
"""

from __future__ import annotations

import os

from camlens.errors import UnknownName
from camlens.zoo.network import Network

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


def list_networks() -> list[str]:
    """Names ``load_network`` accepts (torchvision classifiers and the bundled model; timm names too)."""
    from camlens.zoo.torchvision import torchvision_names

    return [DEFAULT_NETWORK, *torchvision_names()]


def load_network(
    name: str = DEFAULT_NETWORK, weight_path: str | None = None, *, offline: bool | None = None
) -> Network:
    """Build network ``name`` with its weights, or raise :class:`UsageError` saying what to do.

    ``offline`` (default: the ``CAMLENS_OFFLINE`` environment variable) skips the download attempt.
    Only the code the name needs is imported: the bundled default imports neither torchvision nor timm.
    """
    if offline is None:
        offline = os.environ.get("CAMLENS_OFFLINE", "") not in ("", "0")
    if ".py:" in name:
        from camlens.zoo.user import load_user_model

        return load_user_model(name, weight_path)
    name = ALIASES.get(name, name)
    if name in (DEFAULT_NETWORK, "tf_efficientnet_lite0"):
        from camlens.zoo.lite0 import load_lite0

        return load_lite0(weight_path)
    from camlens.zoo.torchvision import load_torchvision, torchvision_names

    if name in torchvision_names():
        return load_torchvision(name, weight_path, offline)
    from camlens.zoo.timm import is_timm_name, load_timm

    timm_name = name.removeprefix("timm:")
    if is_timm_name(timm_name):
        return load_timm(timm_name, weight_path)
    from camlens.layers import closest_names

    suggestions = closest_names(name, list_networks(), 4)
    raise UnknownName(f"unknown network {name!r}; closest: {', '.join(suggestions)}")
