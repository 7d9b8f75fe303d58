"""The built-in method and metric names, as plain constants: no torch import, so a command line can offer
them as choices (and reject a misspelt one) before any model code is loaded.

The method names are read off the one catalog, :mod:`camlens.catalog`, as the registries of
:mod:`camlens.methods` are; :func:`camlens.available_methods` also lists methods registered at run time.

>>> from camlens.names import METHODS, SEED_METHODS
>>> SEED_METHODS
('gradcam', 'gradcam++', 'guided_backprop', 'guided_gradcam')
"""

from camlens.catalog import ROWS

GUIDED_BACKPROP = "guided_backprop"
GUIDED_GRADCAM = "guided_gradcam"
CAM_METHODS = tuple(row.name for row in ROWS if row.kind == "cam")  # the built-in (A, g) CAM weightings
CONTEXT_METHODS = tuple(row.name for row in ROWS if row.kind == "context")  # those that need more than (A, g)
GUIDED_METHODS = tuple(row.name for row in ROWS if row.kind == "guided")  # image-shaped (B, C, H, W) maps
VIT_ONLY_METHODS = tuple(row.name for row in ROWS if row.vit_only)  # attention probabilities: ViTs only
METHODS = tuple(row.name for row in ROWS)  # every built-in method, in registry order
SEED_METHODS = tuple(row.name for row in ROWS if row.seed)  # what ``explain`` runs by default
# name -> (family, uses a target layer, title and paper), for `camlens methods`
METHOD_INFO: dict[str, tuple[str, bool, str]] = {r.name: (r.family, r.uses_layer, r.description) for r in ROWS}
METRICS = (  # the built-in metrics, in registry order (a test keeps this equal to camlens.metrics.METRICS)
    "deletion", "insertion", "average_drop", "increase_in_confidence", "average_gain", "road", "road_morf",
    "road_lerf", "coherency", "complexity", "adcc", "arcc", "max_sensitivity", "pointing_game",
    "energy_pointing_game", "sparseness",
)  # fmt: skip
MASK_METRICS = ("pointing_game", "energy_pointing_game")  # need object masks (camlens evaluate --boxes)

__all__ = [
    "CAM_METHODS",
    "CONTEXT_METHODS",
    "GUIDED_BACKPROP",
    "GUIDED_GRADCAM",
    "GUIDED_METHODS",
    "MASK_METRICS",
    "METHODS",
    "METHOD_INFO",
    "METRICS",
    "SEED_METHODS",
    "VIT_ONLY_METHODS",
]
