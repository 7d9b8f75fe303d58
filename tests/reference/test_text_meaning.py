"""MEANING of explain_text: a tiny CLIP trained here on two-colour-patch images captioned by their colours.

Each 32 x 32 image holds two 8 x 8 squares of different colours on a grey texture and is captioned
"a red square and a blue square" (the colours in random order). The image tower is a small GAP CNN, the text
tower a bag of words over a six-word vocabulary with its own tokenizer; both are trained with CLIP's
symmetric contrastive loss for 100 steps (a few seconds). On held-out images the map for the one-word prompt of
a colour present ("red") must peak inside that colour's square: the evidence is known by construction.
"""

from __future__ import annotations

import pytest
import torch

from camlens.synthetic import COLOUR_WORDS as COLOURS
from camlens.synthetic import inside, tokenize, trained_clip, two_patches
from camlens.text import explain_text


@pytest.fixture(scope="module")
def trained():
    return trained_clip()  # camlens.synthetic: 100 steps of CLIP's contrastive loss


@pytest.mark.slow
def test_the_prompt_of_a_colour_peaks_in_its_square(trained):
    images, _, colours, boxes = two_patches(200, seed=3)
    result = explain_text(trained, images, list(COLOURS), ["gradcam"], tokenizer=tokenize)
    # the model learnt the task: the caption's colours are the two most similar one-word prompts
    top_two = result.similarity.topk(2, dim=1).indices.sort(dim=1).values
    assert float((top_two == colours.sort(dim=1).values).all(1).float().mean()) >= 0.9
    hits = []
    for j in range(2):  # the first and the second square of each image
        maps = result["gradcam"][torch.arange(len(images)), colours[:, j]]  # (N, H, W): that square's colour
        flat = maps.flatten(1).argmax(1)
        peaks = torch.stack([flat // maps.shape[-1], flat % maps.shape[-1]], dim=1)
        hits.append(inside(boxes[:, j], peaks))
    rate = float(torch.cat(hits).float().mean())
    assert rate >= 0.7, f"the colour's map peaks in its square on {rate:.0%} of the held-out images"
    # and it is the text that moves the map: the other square's colour peaks elsewhere
    other = result["gradcam"][torch.arange(len(images)), colours[:, 1]]
    flat = other.flatten(1).argmax(1)
    peaks = torch.stack([flat // other.shape[-1], flat % other.shape[-1]], dim=1)
    assert float(inside(boxes[:, 0], peaks).float().mean()) < 0.3
