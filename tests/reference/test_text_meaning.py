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
import torch.nn.functional as F
from torch import nn

from camlens.synthetic import CLASS_COLOURS, TinyCNN, inside
from camlens.text import explain_text

COLOURS = ("red", "green", "blue", "yellow")  # camlens.synthetic.CLASS_COLOURS, in order
VOCABULARY = {word: i + 1 for i, word in enumerate(("a", "square", "and", *COLOURS))}  # 0 pads


def tokenize(texts: list[str], length: int = 8) -> torch.Tensor:
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        words = [VOCABULARY[w] for w in text.split()]
        ids[row, : len(words)] = torch.tensor(words)
    return ids


class TinyClip(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.visual = TinyCNN(classes=dim, width=8, depth=2, pools=1)
        self.words = nn.EmbeddingBag(len(VOCABULARY) + 1, 32, mode="mean", padding_idx=0)
        self.text_projection = nn.Linear(32, dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.words(ids))


def two_patches(n: int, seed: int, size: int = 32, patch: int = 8):
    """Images with two squares of different colours, their captions, colours and boxes (top, left, bottom, right)."""
    generator = torch.Generator().manual_seed(seed)
    texture = 0.35 + 0.3 * torch.rand(n, 1, size, size, generator=generator)
    images = F.avg_pool2d(texture, 3, stride=1, padding=1, count_include_pad=False).expand(n, 3, size, size).clone()
    colours = torch.stack([torch.randperm(len(COLOURS), generator=generator)[:2] for _ in range(n)])
    boxes = torch.zeros(n, 2, 4, dtype=torch.long)
    captions = []
    for i in range(n):
        while True:
            corners = torch.randint(0, size - patch + 1, (2, 2), generator=generator)
            if (corners[0] - corners[1]).abs().max() >= patch:  # the squares do not overlap
                break
        for j in range(2):
            top, left = (int(v) for v in corners[j])
            colour = torch.tensor(CLASS_COLOURS[int(colours[i, j])]).view(3, 1, 1)
            noise = 0.05 * torch.randn(3, patch, patch, generator=generator)
            images[i, :, top : top + patch, left : left + patch] = colour + noise
            boxes[i, j] = torch.tensor([top, left, top + patch, left + patch])
        captions.append(f"a {COLOURS[int(colours[i, 0])]} square and a {COLOURS[int(colours[i, 1])]} square")
    return images.clamp(0, 1), captions, colours, boxes


@pytest.fixture(scope="module")
def trained() -> TinyClip:
    torch.manual_seed(0)
    model = TinyClip()
    images, captions, _, _ = two_patches(512, seed=1)
    ids = tokenize(captions)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(2)
    for _ in range(100):
        pick = torch.randint(0, len(images), (32,), generator=generator)
        image = F.normalize(model.encode_image(images[pick]), dim=-1)
        text = F.normalize(model.encode_text(ids[pick]), dim=-1)
        logits = model.logit_scale.exp() * image @ text.T
        same = (ids[pick][:, None] == ids[pick][None]).all(-1).float()  # identical captions are positives too
        target = same / same.sum(1, keepdim=True)
        loss = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean()) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


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
