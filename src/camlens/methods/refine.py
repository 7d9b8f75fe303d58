"""Refine-CAM (Domeniconi et al. 2026): per-layer maps normalised, resized and multiplied across layers."""

from __future__ import annotations

from torch import Tensor

from camlens.methods.gradcam import gradcam_plus_plus


def refinecam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Refine-CAM (Domeniconi et al. 2026, arXiv:2605.14641): the product over layers of base maps.

    At one layer this is its base method, Grad-CAM++ (as in both peers). With several target layers
    (``explain(..., target_layer=[...])``) each layer's map is ReLU'd, normalised to [0, 1] and resized
    to the image, and the maps are multiplied, so that only regions every layer agrees on survive: the
    deep layer's localisation sharpened by the shallow layers' resolution. Peers: pytorch-grad-cam's
    ``RefineCAM`` forgets to keep its per-layer normalisation (its loop rebinds a local variable), so
    its product is of maps that were only min-max scaled by the base method; the maps agree as long as
    every base map already lies in [0, 1].
    """
    return gradcam_plus_plus(activations, gradients)
