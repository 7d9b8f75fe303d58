"""Hugging Face DETR and RT-DETR through explain_detections (random weights, built from small configs): each
box is a query, its score that query's class probability. Oracle: a forward hook and torch.autograd.grad of the
query's score on the padded, normalised input built here, Grad-CAM / ODAM by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from camlens.detection import explain_detections
from helpers import assert_untouched, snapshot

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def _detr():
    torch.manual_seed(0)
    config = transformers.DetrConfig(
        use_timm_backbone=True, backbone="resnet18", use_pretrained_backbone=False, num_queries=8, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
        decoder_attention_heads=2, num_labels=3,
    )  # fmt: skip
    return transformers.DetrForObjectDetection(config).eval()


def _rtdetr():
    torch.manual_seed(0)
    backbone = transformers.RTDetrResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = transformers.RTDetrConfig(
        backbone_config=backbone, d_model=32, encoder_hidden_dim=32, encoder_in_channels=[32, 64, 128],
        encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        decoder_layers=1, encoder_layers=1, num_queries=8, num_labels=3, decoder_in_channels=[32, 32, 32],
        anchor_image_size=None, num_denoising=0,
    )  # fmt: skip
    return transformers.RTDetrForObjectDetection(config).eval()


def _by_hand(model, kind, image, query, layer, method):
    h, w = image.shape[-2:]
    grid_h, grid_w = (math.ceil(h / 32) * 32, math.ceil(w / 32) * 32) if kind == "rtdetr" else (h, w)
    x = F.pad(image, (0, grid_w - w, 0, grid_h - h))[None]
    kept = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: kept.setdefault("A", out))
    try:
        with torch.enable_grad():
            if kind == "rtdetr":
                out = model(pixel_values=x)
                p = out.logits.sigmoid()[0]
            else:
                mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
                std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                out = model(pixel_values=(x - mean) / std, pixel_mask=torch.ones(1, grid_h, grid_w, dtype=torch.long))
                p = out.logits.softmax(-1)[0, :, :-1]
            label = int(p[query].argmax())
            score = p[query, label]
            (g,) = torch.autograd.grad(score, kept["A"])
    finally:
        handle.remove()
    a, g = kept["A"][0].detach(), g[0]
    cam = (g.mean(dim=(1, 2))[:, None, None] * a).sum(0) if method == "gradcam" else (g * a).sum(0)
    cam = F.interpolate(cam[None, None], size=(grid_h, grid_w), mode="bilinear", align_corners=False)[0, 0][:h, :w]
    cx, cy, bw, bh = out.pred_boxes[0, query].detach().tolist()
    box = [(cx - bw / 2) * grid_w, (cy - bh / 2) * grid_h, (cx + bw / 2) * grid_w, (cy + bh / 2) * grid_h]
    return cam, label, float(score.detach()), box


@pytest.mark.parametrize(
    ("kind", "layer"), [("detr", "model.input_projection"), ("rtdetr", "model.encoder_input_proj.2")]
)
@pytest.mark.parametrize("method", ["gradcam", "odam"])
def test_a_query_box_equals_hook_and_autograd_of_its_probability(kind, layer, method):
    model = _detr() if kind == "detr" else _rtdetr()
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))
    before = snapshot(model)
    result = explain_detections(model, [image], [method], score_threshold=0.0, max_detections=3)
    assert_untouched(model, before)
    assert result.target_layer == layer  # the adapter's automatic layer
    found = result.detections[0]
    assert len(found) == 3
    for d in found:
        raw, label, score, box = _by_hand(model, kind, image, d.index, layer, method)
        assert d.label == label and d.score == pytest.approx(score, rel=1e-5)
        assert d.box == pytest.approx(box, rel=1e-5, abs=1e-4)
        torch.testing.assert_close(d.raw[method], raw, rtol=1e-4, atol=1e-6)
        shown = raw.relu()
        if float(shown.max()) > float(shown.min()):  # maps are the ReLU of the raw map, scaled to [0, 1]
            spread = shown.max() - shown.min()
            expected = (shown - shown.min()) / spread
            # the raw map's tolerance (rtol 1e-4), carried through the min-max scaling: with two threads the sums
            # round differently and a narrow spread magnifies that
            carried = float(1e-4 * shown.abs().max() / spread) + 1e-5
            torch.testing.assert_close(d.maps[method], expected, rtol=1e-4, atol=carried)

def test_a_detr_in_training_mode_is_refused():
    model = _detr().train()
    with pytest.raises(ValueError, match="training mode"):
        explain_detections(model, [torch.rand(3, 32, 32)], ["gradcam"])
