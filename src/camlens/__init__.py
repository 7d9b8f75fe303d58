"""camlens: why did the vision model predict that? Grad-CAM, Grad-CAM++, Guided Backprop, Guided Grad-CAM.

>>> import camlens
>>> result = camlens.explain(model, x)              # doctest: +SKIP
>>> result["gradcam"], result.target_layer          # doctest: +SKIP
"""

from camlens.capture import Capture as Capture
from camlens.capture import capture as capture
from camlens.explain import SEED_METHODS as SEED_METHODS
from camlens.explain import Explanation as Explanation
from camlens.explain import GradCAM as GradCAM
from camlens.explain import GradCAMPlusPlus as GradCAMPlusPlus
from camlens.explain import GuidedBackprop as GuidedBackprop
from camlens.explain import GuidedGradCAM as GuidedGradCAM
from camlens.explain import available_methods as available_methods
from camlens.explain import explain as explain
from camlens.layers import default_layer as default_layer
from camlens.layers import resolve_layer as resolve_layer
from camlens.targets import class_score as class_score

__version__ = "0.1.0"

__all__ = [
    "SEED_METHODS",
    "Capture",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "available_methods",
    "capture",
    "class_score",
    "default_layer",
    "explain",
    "resolve_layer",
]
