"""One box's Grad-CAM: camlens's ``explain_detections`` against pytorch-grad-cam's ``GradCAM`` with
``FasterRCNNBoxScoreTarget`` for the same box at the same layer (see benchmarks/detection_peers.py).

The detector is :class:`camlens.synthetic.TinyCenterNet` with seeded random weights (its sigmoid heat map's local
maxima are boxes, so random weights give boxes). Its boxes are not differentiable (a peak +- 6 px), so the IoU that
``FasterRCNNBoxScoreTarget`` adds to the score has no gradient: both explain the box's score.

* At a full-resolution layer (``features.1``) the two definitions are the same map: equal to float precision.
* At the stride-2 layer (``features``) they differ in one documented place: pytorch-grad-cam takes the ReLU on the
  layer's grid, then resizes; camlens resizes the signed map to the input, then takes the ReLU. Both are checked
  against that formula written here from the layer's activations and gradients.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from camlens.detection import explain_detections
from camlens.postprocess import normalize_per_image, resize
from camlens.synthetic import SCENE_SIZE, TinyCenterNet, decode_squares, square_adapter, square_scenes

pytest.importorskip("pytorch_grad_cam")


class _Batch(nn.Module):
    """The detector as pytorch-grad-cam calls it: ``model(batch) -> [dict per image]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return decode_squares(self.model, list(x))


def _normalised(m: torch.Tensor) -> torch.Tensor:
    return normalize_per_image(m[None])[0]


def _setup():
    torch.manual_seed(3)
    model = TinyCenterNet().eval()
    images, _ = square_scenes(1, torch.Generator().manual_seed(5))
    return model, images[0]


def _theirs(model, image, layer, box, label):
    """pytorch-grad-cam's map and, from its hooks, the layer's signed Grad-CAM on the layer's grid."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    peer_model = copy.deepcopy(model)
    wrapped = _Batch(peer_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GradCAM(model=wrapped, target_layers=[dict(peer_model.named_modules())[layer]]) as peer:
            target = FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=np.array([box]))
            maps = peer(input_tensor=image[None], targets=[target])
            activations = peer.activations_and_grads.activations[0][0]
            gradients = peer.activations_and_grads.gradients[0][0]
    signed = (gradients.mean(dim=(1, 2))[:, None, None] * activations).sum(0)
    return torch.from_numpy(np.asarray(maps[0])), signed


def _ours(model, image, layer, box, label):
    result = explain_detections(
        model, [image], ["gradcam"], target_layer=layer, boxes=[[box]], labels=[[label]], adapter=square_adapter()
    )
    (d,) = result.detections[0]
    assert d.iou == pytest.approx(1.0)
    return d.maps["gradcam"]


def _boxes(model, image):
    out = decode_squares(model, [image])[0]
    order = out["scores"].argsort(descending=True)[:3]
    assert len(order) >= 2, "the random detector should give boxes"
    return [(out["boxes"][k].tolist(), int(out["labels"][k])) for k in order]


def test_one_box_at_a_full_resolution_layer_is_pytorch_grad_cams_map():
    model, image = _setup()
    for box, label in _boxes(model, image):
        ours = _ours(model, image, "features.1", box, label)
        theirs, signed = _theirs(model, image, "features.1", box, label)
        assert signed.shape == (SCENE_SIZE, SCENE_SIZE)  # no resize: the definitions are the same
        assert signed.min() < 0 < signed.max()  # the ReLU does something
        # pytorch-grad-cam divides by (max + 1e-7): renormalised, the same map
        assert torch.allclose(ours, _normalised(theirs), atol=1e-4), float((ours - theirs).abs().max())


def test_one_box_at_a_strided_layer_differs_only_by_where_the_relu_is():
    model, image = _setup()
    differ = []
    for box, label in _boxes(model, image):
        ours = _ours(model, image, "features", box, label)
        theirs, signed = _theirs(model, image, "features", box, label)
        assert signed.shape == (SCENE_SIZE // 2, SCENE_SIZE // 2)
        size = (SCENE_SIZE, SCENE_SIZE)
        relu_then_resize = _normalised(resize(signed.clamp(min=0)[None], size)[0])
        resize_then_relu = _normalised(resize(signed[None], size)[0].clamp(min=0))
        assert torch.allclose(ours, resize_then_relu, atol=1e-4)
        # pytorch-grad-cam normalises (max + 1e-7) before cv2's resize: the same up to an affine map
        assert torch.allclose(_normalised(theirs), relu_then_resize, atol=1e-3)
        differ.append(float((ours - _normalised(theirs)).abs().max()))
    assert max(differ) > 0.01  # the two definitions do give different maps here
