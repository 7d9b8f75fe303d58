"""camlens: why did the vision model predict that? Grad-CAM, Grad-CAM++, Guided Backprop, Guided Grad-CAM.

>>> import camlens
>>> result = camlens.explain(model, x)              # doctest: +SKIP
>>> result["gradcam"], result.target_layer          # doctest: +SKIP

``import camlens`` is cheap: torch and the engine are imported on first use of a name below (PEP 562
module ``__getattr__``), so the command line answers ``--help`` and usage errors without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from camlens.names import SEED_METHODS as SEED_METHODS

if TYPE_CHECKING:
    from camlens.detection import explain_detections as explain_detections
    from camlens.engine import Capture as Capture
    from camlens.engine import capture as capture
    from camlens.explanation import Explanation as Explanation
    from camlens.explanation import GradCAM as GradCAM
    from camlens.explanation import GradCAMPlusPlus as GradCAMPlusPlus
    from camlens.explanation import GuidedBackprop as GuidedBackprop
    from camlens.explanation import GuidedGradCAM as GuidedGradCAM
    from camlens.explanation import available_methods as available_methods
    from camlens.explanation import cost as cost
    from camlens.explanation import explain as explain
    from camlens.images import read_image as read_image
    from camlens.layers import default_layer as default_layer
    from camlens.layers import resolve_layer as resolve_layer
    from camlens.render import figure_grid as figure_grid
    from camlens.render import show as show
    from camlens.segmentation import SegmentationExplanation as SegmentationExplanation
    from camlens.segmentation import explain_segmentation as explain_segmentation
    from camlens.targets import class_score as class_score
    from camlens.text import explain_similarity as explain_similarity
    from camlens.text import explain_text as explain_text
    from camlens.zoo import Network as Network
    from camlens.zoo import load_network as load_network

__version__ = "0.2.0"

# public name -> the module that defines it (imported on first access)
_LAZY = {
    "Capture": "camlens.engine",
    "capture": "camlens.engine",
    "Explanation": "camlens.explanation",
    "GradCAM": "camlens.explanation",
    "GradCAMPlusPlus": "camlens.explanation",
    "GuidedBackprop": "camlens.explanation",
    "GuidedGradCAM": "camlens.explanation",
    "available_methods": "camlens.explanation",
    "explain": "camlens.explanation",
    "explain_detections": "camlens.detection",
    "default_layer": "camlens.layers",
    "resolve_layer": "camlens.layers",
    "cost": "camlens.explanation",
    "class_score": "camlens.targets",
    "explain_similarity": "camlens.text",
    "explain_text": "camlens.text",
    "read_image": "camlens.images",
    "show": "camlens.render",
    "SegmentationExplanation": "camlens.segmentation",
    "explain_segmentation": "camlens.segmentation",
    "figure_grid": "camlens.render",
    "Network": "camlens.zoo",
    "load_network": "camlens.zoo",
}

__all__ = [
    "SEED_METHODS",
    "Capture",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "Network",
    "SegmentationExplanation",
    "available_methods",
    "capture",
    "class_score",
    "cost",
    "default_layer",
    "explain",
    "explain_detections",
    "explain_segmentation",
    "explain_similarity",
    "explain_text",
    "figure_grid",
    "load_network",
    "read_image",
    "resolve_layer",
    "show",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'camlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
