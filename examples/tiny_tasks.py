"""Tiny task models for the command line: a segmenter and a CLIP, trained on camlens.synthetic's scenes when
the factory is called (a few seconds on a CPU; no weights to download).

    camlens segment examples/marker_scene.png --model examples/tiny_tasks.py:segmenter \
        --labels examples/marker_labels.txt --input-size 32 --mean 0 0 0 --std 1 1 1
    camlens explain examples/two_squares.png --model examples/tiny_tasks.py:clip --text red blue \
        --input-size 32 --mean 0 0 0 --std 1 1 1
    camlens detect examples/three_squares.png --model examples/tiny_tasks.py:detector \
        --labels examples/square_labels.txt --methods gradcam odam drise

The segmenter's classes (examples/marker_labels.txt): the marker square itself, and the grey background,
whose class is the marker's colour: it can only be told from the marker, elsewhere in the image. The CLIP
was trained on images of two coloured squares captioned "a red square and a blue square"; its words are
those of camlens.synthetic.VOCABULARY. The detector finds the red, green and blue squares of
camlens.synthetic.square_scenes (a CenterNet-like heat map; its adapter says how to read its boxes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from camlens.detection import DetectorAdapter
from camlens.synthetic import (
    ContextSegmenter,
    TinyCenterNet,
    TinyClip,
    square_adapter,
    tokenize,
    trained_clip,
    trained_detector,
    trained_segmenter,
)


def segmenter() -> ContextSegmenter:
    """The tiny segmenter of camlens.synthetic, trained on 3200 marker scenes (98.8% pixel accuracy)."""
    model, _ = trained_segmenter()
    return model.eval()


def clip() -> tuple[TinyClip, Callable[[list[str]], torch.Tensor]]:
    """The tiny CLIP of camlens.synthetic, trained on 512 two-square images, and its tokenizer."""
    return trained_clip(), tokenize


def detector() -> tuple[TinyCenterNet, DetectorAdapter]:
    """The tiny detector of camlens.synthetic, trained on 256 three-square scenes, and its adapter."""
    return trained_detector(), square_adapter()


__all__ = ["segmenter", "clip", "detector"]
