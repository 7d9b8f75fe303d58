"""camlens: why did the vision model predict that? Grad-CAM, Grad-CAM++, Guided Backprop, Guided Grad-CAM.

>>> import camlens
>>> result = camlens.explain(model, x)              # doctest: +SKIP
>>> result["gradcam"], result.target_layer          # doctest: +SKIP

``import camlens`` is cheap: torch and the engine are imported on first use of a name below (PEP 562
module ``__getattr__``), so the command line answers ``--help`` and usage errors without loading torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from camlens.names import SEED_METHODS as SEED_METHODS

if TYPE_CHECKING:
    from camlens.capture import Capture as Capture
    from camlens.capture import capture as capture
    from camlens.detection import explain_detections as explain_detections
    from camlens.explain import Explanation as Explanation
    from camlens.explain import GradCAM as GradCAM
    from camlens.explain import GradCAMPlusPlus as GradCAMPlusPlus
    from camlens.explain import GuidedBackprop as GuidedBackprop
    from camlens.explain import GuidedGradCAM as GuidedGradCAM
    from camlens.explain import available_methods as available_methods
    from camlens.explain import cost as cost
    from camlens.explain import explain as explain
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
    "Capture": "camlens.capture",
    "capture": "camlens.capture",
    "Explanation": "camlens.explain",
    "GradCAM": "camlens.explain",
    "GradCAMPlusPlus": "camlens.explain",
    "GuidedBackprop": "camlens.explain",
    "GuidedGradCAM": "camlens.explain",
    "available_methods": "camlens.explain",
    "explain": "camlens.explain",
    "explain_detections": "camlens.detection",
    "default_layer": "camlens.layers",
    "resolve_layer": "camlens.layers",
    "cost": "camlens.explain",
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


class _Package(types.ModuleType):
    """The package's module type: ``camlens.capture`` and ``camlens.explain`` stay the functions.

    Importing a submodule binds it on its package (``camlens.explain = <module>``); the functions of
    the same name take that place, as they did when the package imported them eagerly.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in ("capture", "explain"):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'camlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
