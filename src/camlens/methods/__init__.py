"""The explanation methods: pure method functions, and the registries ``explain`` reads.

Every built-in method is a row of :mod:`camlens.catalog` naming its function (``"module:function"``).
``CAM_METHODS`` holds the ``(A, g) -> map`` functions, ``CONTEXT_METHODS`` the methods that need more (the
classifier, the model again, the whole graph); both are built from the catalog, a function imported when it
is first used (:mod:`camlens.methods.registry`). ``register_cam`` / ``register_method`` add methods at run
time.
"""

from camlens.methods.gradcam import gradcam as gradcam
from camlens.methods.gradcam import gradcam_plus_plus as gradcam_plus_plus
from camlens.methods.registry import CAM_METHODS as CAM_METHODS
from camlens.methods.registry import CONTEXT_METHODS as CONTEXT_METHODS
from camlens.methods.registry import register_cam as register_cam
from camlens.methods.registry import register_method as register_method

__all__ = ["CAM_METHODS", "CONTEXT_METHODS", "gradcam", "gradcam_plus_plus", "register_cam", "register_method"]
