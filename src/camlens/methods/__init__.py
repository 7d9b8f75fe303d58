"""The explanation methods: CAM weightings (pure functions) and the guided-backprop rule."""

from camlens.methods.cam import CAM_METHODS as CAM_METHODS
from camlens.methods.cam import gradcam as gradcam
from camlens.methods.cam import gradcam_plus_plus as gradcam_plus_plus
from camlens.methods.cam import register_cam as register_cam

__all__ = ["CAM_METHODS", "gradcam", "gradcam_plus_plus", "register_cam"]
