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
# name -> (family, uses a target layer, title and paper), for `camlens methods`; its keys are METHODS (a test)
METHOD_INFO: dict[str, tuple[str, bool, str]] = {
    "gradcam": ("gradient CAM", True, "Grad-CAM (Selvaraju et al. 2017)"),
    "gradcam++": ("gradient CAM", True, "Grad-CAM++ (Chattopadhay et al. 2018)"),
    "xgradcam": ("gradient CAM", True, "XGrad-CAM (Fu et al. 2020)"),
    "layercam": ("gradient CAM", True, "LayerCAM (Jiang et al. 2021)"),
    "hirescam": ("gradient CAM", True, "HiResCAM (Draelos & Carin 2020)"),
    "gradcam_elementwise": ("gradient CAM", True, "element-wise Grad-CAM"),
    "fem": ("activation CAM", True, "FEM (Fuad et al. 2020), gradient-free"),
    "eigencam": ("activation CAM", True, "Eigen-CAM (Muhammad & Yeasin 2020)"),
    "eigengradcam": ("gradient CAM", True, "Eigen-Grad-CAM"),
    "kpcacam": ("activation CAM", True, "KPCA-CAM (kernel PCA of the activations)"),
    "refinecam": ("gradient CAM", True, "Refine-CAM (Domeniconi et al. 2026)"),
    "fullgrad": ("whole graph", False, "FullGrad (Srinivas & Fleuret 2019)"),
    "cam": ("classifier CAM", True, "CAM (Zhou et al. 2016), GAP + linear heads"),
    "finercam": ("gradient CAM", True, "Finer-CAM (Zhang et al. 2025)"),
    "shapleycam": ("gradient CAM", True, "ShapleyCAM (Cai 2024)"),
    "legrad": ("whole graph", False, "LeGrad (Bousselham et al. 2024), vision transformers only"),
    "ablationcam": ("perturbation CAM", True, "Ablation-CAM (Desai & Ramaswamy 2020)"),
    "scorecam": ("perturbation CAM", True, "Score-CAM (Wang et al. 2020)"),
    "sscam": ("perturbation CAM", True, "SS-CAM (smoothed Score-CAM)"),
    "iscam": ("perturbation CAM", True, "IS-CAM (integrated Score-CAM)"),
    "smoothgradcam++": ("smoothed CAM", True, "Smooth Grad-CAM++ (Omeiza et al. 2019)"),
    "sess": ("smoothed CAM", True, "SESS (Tyagi et al. 2022), scales and windows"),
    "guided_backprop": ("pixel gradient", False, "guided backpropagation (Springenberg et al. 2015)"),
    "guided_gradcam": ("pixel gradient x CAM", True, "Guided Grad-CAM (Selvaraju et al. 2017)"),
}
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
    "METHOD_INFO",
    "METRICS",
    "SEED_METHODS",
    "VIT_ONLY_METHODS",
]
