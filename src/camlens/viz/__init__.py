"""Pictures from maps: colour maps, overlays, guided-backprop display, grids. Numpy and PIL only.

Maps come in at the image's own size (H x W, [0, 1]); everything here returns ``uint8`` RGB arrays
(``grid`` a PIL image). ``resize_maps`` is the one torch function; it imports torch when called.
"""

from camlens.viz.colormaps import gradient_image as gradient_image
from camlens.viz.colormaps import jet as jet
from camlens.viz.grid import grid as grid
from camlens.viz.overlay import overlay as overlay
from camlens.viz.resize import resize_maps as resize_maps

__all__ = ["gradient_image", "grid", "jet", "overlay", "resize_maps"]
