"""camlens.viz.boxes.draw_boxes: the rectangle in the class's colour, and the caption only where it fits."""

from __future__ import annotations

import numpy as np

from camlens.viz.boxes import box_colour, draw_boxes


def _changed(before, after):
    return np.argwhere((before != after).any(axis=-1))


def test_a_large_picture_gets_the_outline_and_its_caption_strip():
    rgb = np.zeros((256, 256, 3), dtype=np.uint8)
    out = draw_boxes(rgb, [(100, 120, 180, 200)], ["0: cat 0.90"], labels=[0])
    assert tuple(out[150, 100]) == box_colour(0)  # the left edge
    changed = _changed(rgb, out)
    assert changed[:, 0].min() < 120  # the caption's strip sits above the box's top edge


def test_a_tiny_picture_gets_its_boxes_only():
    rgb = np.zeros((48, 48, 3), dtype=np.uint8)
    out = draw_boxes(rgb, [(10, 20, 30, 40)], ["0: a long caption 0.99"], labels=[2])
    changed = _changed(rgb, out)
    rows, cols = changed[:, 0], changed[:, 1]
    on_edge = (rows == 20) | (rows == 40) | (cols == 10) | (cols == 30)
    assert on_edge.all() and len(changed) > 0  # nothing but the outline: the caption would cover the picture
    assert tuple(out[30, 10]) == box_colour(2)
