"""The explanation methods: CAM weightings (pure functions) and the guided-backprop rule.

``CAM_METHODS`` holds the ``(A, g) -> map`` functions; the methods that need more (the classifier, the
model again, the whole graph) are in :mod:`camlens.methods.context`'s registry, filled when
:mod:`camlens.methods.catalog` is imported (``camlens.explain`` does).
"""

from camlens.methods import gradient as gradient
from camlens.methods import refine as refine
from camlens.methods.cam import CAM_METHODS as CAM_METHODS
from camlens.methods.cam import gradcam as gradcam
from camlens.methods.cam import gradcam_plus_plus as gradcam_plus_plus
from camlens.methods.cam import register_cam as register_cam

__all__ = ["CAM_METHODS", "gradcam", "gradcam_plus_plus", "register_cam"]
