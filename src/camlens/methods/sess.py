"""SESS (Tyagi et al., ECCV-W 2022): saliency enhancing with scaling and sliding, around a CAM method."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camlens.methods.context import MethodContext

SCALE_STEP = 2.0 / 7.0  # scales grow by 2/7 of the window: 224, 288, 352, ... for a 224 window (the paper's)


def _windows(length: int, window: int, step: int) -> list[int]:
    starts = list(range(0, max(length - window, 0) + 1, step))
    if starts[-1] + window < length:
        starts.append(length - window)  # the last window is shifted back into the image
    return starts


def _scaled_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    window = min(height, width)
    sizes = []
    for i in range(scales):
        short = round(window * (1 + SCALE_STEP * i))
        sizes.append((round(height * short / window), round(width * short / window)))
    return sizes


def patch_count(height: int, width: int, scales: int) -> int:
    """How many ``w x w`` patches SESS explains for one image of ``height x width`` (``w`` the shorter side)."""
    window = min(height, width)
    sizes = _scaled_sizes(height, width, scales)
    return sum(len(_windows(h, window, window)) * len(_windows(w, window, window)) for h, w in sizes)


def sess(context: MethodContext) -> Tensor:
    """SESS (Tyagi et al. 2022): Grad-CAM over sliding windows of the image at several scales, fused.

    The image is resized so that its shorter side is ``w (1 + 2/7 i)``, ``i < num_samples`` (default 12
    scales, the paper's ``224, 288, ...`` for a 224 window ``w``, the shorter input side); windows of
    ``w x w`` slide with stride ``w`` (the last one shifted back inside). Each patch's Grad-CAM at the
    target layer (normalised to [0, 1]) is weighted by the patch's softmax probability of the explained
    class divided by the highest patch probability, pasted back where the patch came from, and the
    pasted maps are fused by their mean over the patches covering each pixel (values <= 0 do not vote,
    the paper's theta = 0). ``batch_size`` patches run at a time. Not done here: the paper's pre-filter
    of low-scoring patches (ratio 0 by default in both) and pytorch-grad-cam's final Gaussian blur.
    """
    from camlens.engine import capture
    from camlens.methods.gradcam import gradcam
    from camlens.postprocess import cam_to_image
    from camlens.progress import Counter

    x = context.x.detach()
    height, width = int(x.shape[-2]), int(x.shape[-1])
    window = min(height, width)
    scales = context.options.num_samples or 12
    classes = context.capture.classes
    fused = []
    counter = Counter("sess", patch_count(height, width, scales) * x.shape[0])
    for b in range(x.shape[0]):
        total = x.new_zeros(height, width)
        votes = x.new_zeros(height, width)
        patches, places = [], []
        for i, (h, w) in enumerate(_scaled_sizes(height, width, scales)):
            image = (
                F.interpolate(x[b : b + 1], size=(h, w), mode="bilinear", align_corners=False) if i else x[b : b + 1]
            )
            for top in _windows(h, window, window):
                for left in _windows(w, window, window):
                    patches.append(image[..., top : top + window, left : left + window])
                    places.append((i, h, w, top, left))
        weights, maps = [], []
        for start in range(0, len(patches), context.options.batch_size):
            chunk = torch.cat(patches[start : start + context.options.batch_size])
            targets = context.targets if classes is None else classes[b].expand(chunk.shape[0])
            cap = capture(context.model, chunk, targets, context.layer, layout=context.layout_spec)
            assert cap.activations is not None and cap.gradients is not None
            maps.append(cam_to_image(gradcam(cap.activations, cap.gradients), (window, window)))
            if cap.logits is not None and classes is not None:
                probs = torch.softmax(cap.logits.float(), dim=1)[:, int(classes[b])].to(x.dtype)
            else:
                probs = cap.scores.clamp(min=0)
            weights.append(probs)
            counter.advance(chunk.shape[0])
        weight = torch.cat(weights)
        weight = weight / weight.max() if weight.max() > 0 else torch.ones_like(weight)
        patch_maps = torch.cat(maps) * weight[:, None, None]
        canvases: dict[int, tuple[Tensor, Tensor]] = {}
        for m, (i, h, w, top, left) in zip(patch_maps, places, strict=True):
            canvas, count = canvases.setdefault(i, (x.new_zeros(h, w), x.new_zeros(h, w)))
            canvas[top : top + window, left : left + window] += m
            count[top : top + window, left : left + window] += (m > 0).to(x.dtype)
        for canvas, count in canvases.values():
            both = torch.stack([canvas, count])[None]
            both = F.interpolate(both, size=(height, width), mode="bilinear", align_corners=False)[0]
            total += both[0]
            votes += both[1]
        fused.append(torch.where(votes > 0, total / votes.clamp(min=1e-12), 0.0))
    return torch.stack(fused)
