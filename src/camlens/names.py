"""The built-in method names, as plain constants: no torch import, so a command line can offer them as
choices (and reject a misspelt one) before any model code is loaded.

The registry in :mod:`camlens.methods` stays the authority for what ``explain`` accepts
(:func:`camlens.available_methods`, which also lists methods registered at run time); a test keeps
``METHODS`` equal to the built-in registry.

>>> from camlens.names import METHODS, SEED_METHODS
>>> SEED_METHODS
('gradcam', 'gradcam++', 'guided_backprop', 'guided_gradcam')
"""

GUIDED_BACKPROP = "guided_backprop"
GUIDED_GRADCAM = "guided_gradcam"
CAM_METHODS = (  # the built-in (A, g) CAM weightings, in registry order
    "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "fem", "eigencam",
    "eigengradcam", "kpcacam", "refinecam",
)  # fmt: skip
CONTEXT_METHODS = (  # the built-in methods that need more than (A, g), in registry order
    "fullgrad", "cam", "finercam", "shapleycam", "legrad", "ablationcam", "scorecam", "sscam", "iscam",
    "smoothgradcam++", "sess",
)  # fmt: skip
VIT_ONLY_METHODS = ("legrad",)  # attention probabilities: vision transformers only
METHODS = (*CAM_METHODS, *CONTEXT_METHODS, GUIDED_BACKPROP, GUIDED_GRADCAM)  # every built-in method
SEED_METHODS = ("gradcam", "gradcam++", GUIDED_BACKPROP, GUIDED_GRADCAM)  # what ``explain`` runs by default
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
    "MASK_METRICS",
    "METHODS",
    "METRICS",
    "SEED_METHODS",
    "VIT_ONLY_METHODS",
]
