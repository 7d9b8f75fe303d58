"""The new methods against pytorch-grad-cam and torchcam where they follow the paper; the differences shown
where they do not."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import camlens
from helpers import build, corr
from unit.test_more_methods import tiny

PGC_SAME = {
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcam_elementwise": "GradCAMElementWise",
    "fem": "FEM",
    "shapleycam": "ShapleyCAM",
    "ablationcam": "AblationCAM",
}


def pgc_maps(name: str, model, layer_name: str, x, classes, **kwargs) -> torch.Tensor:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    peer_model = copy.deepcopy(model)
    layer = dict(peer_model.named_modules())[layer_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with getattr(pytorch_grad_cam, name)(model=peer_model, target_layers=[layer], **kwargs) as peer:
            maps = peer(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    return torch.from_numpy(np.asarray(maps))


CASES = [("tiny", m) for m in PGC_SAME] + [("resnet18", m) for m in ("xgradcam", "layercam", "hirescam", "ablationcam")]


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_matches_pytorch_grad_cam(arch, method):
    if arch == "tiny":
        model, layer, x = tiny(), "features", torch.rand(2, 3, 16, 16)
    else:
        model, layer, x = build(arch), "layer4", torch.rand(2, 3, 64, 64)
    result = camlens.explain(model, x, [method], target_layer=layer)
    theirs = pgc_maps(PGC_SAME[method], model, layer, x, result.classes)
    for b in range(x.shape[0]):
        assert corr(theirs[b], result[method][b]) >= 0.999


@pytest.mark.parametrize("method", ["eigencam", "eigengradcam"])
def test_eigen_methods_match_pytorch_grad_cam_up_to_its_sign(method):
    """pytorch-grad-cam's SVD sign is whatever LAPACK returns; ours is oriented. Same projection otherwise."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    result = camlens.explain(tiny(), torch.rand(3, 3, 16, 16), [method], target_layer="features")
    A, g = result.capture.activations, result.capture.gradients
    matrix = A if method == "eigencam" else A * g
    theirs = torch.from_numpy(get_2d_projection(matrix.numpy()))
    for b in range(3):
        assert abs(corr(theirs[b], result.raw[method][b])) >= 0.9999
        assert corr(result.raw[method][b], matrix[b].mean(0)) > 0  # our sign rule


def test_kpcacam_matches_pytorch_grad_cam_up_to_sign():
    pytest.importorskip("sklearn")
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    result = camlens.explain(tiny(), torch.rand(2, 3, 16, 16), ["kpcacam"], target_layer="features")
    theirs = torch.from_numpy(get_2d_projection_kernel(result.capture.activations.numpy()))
    for b in range(2):
        assert abs(corr(theirs[b], result.raw["kpcacam"][b])) >= 0.999


def test_finercam_matches_pytorch_grad_cam_on_the_predicted_class():
    from pytorch_grad_cam import FinerCAM

    model = tiny()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, ["finercam"], target_layer="features")
    peer_model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = FinerCAM(peer_model, [peer_model.features])(x)
    for b in range(2):
        assert corr(torch.from_numpy(theirs[b]), result["finercam"][b]) >= 0.999


def test_cam_matches_torchcam():
    from torchcam.methods import CAM

    model = tiny()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, ["cam"], target_layer="features")
    peer_model = copy.deepcopy(model)
    with CAM(peer_model, "features", "fc", input_shape=(3, 16, 16)) as extractor:
        out = peer_model(x)
        theirs = extractor(result.classes.tolist(), out, normalized=False)[0]
    torch.testing.assert_close(theirs, result.raw["cam"], rtol=1e-4, atol=1e-6)  # both signed, before the ReLU


def test_iscam_and_sscam_match_torchcam():
    from torchcam.methods import ISCAM, SSCAM

    model = tiny()
    x = torch.rand(1, 3, 16, 16)
    result = camlens.explain(model, x, ["iscam"], target_layer="features", num_samples=3)
    sm = camlens.explain(model, x, ["sscam"], target_layer="features", num_samples=2, noise_std=1e-7)
    for cls, kwargs, ours in ((ISCAM, {"num_samples": 3}, result), (SSCAM, {"num_samples": 2, "std": 1e-7}, sm)):
        peer_model = copy.deepcopy(model)
        with cls(peer_model, "features", input_shape=(3, 16, 16), **kwargs) as extractor:
            out = peer_model(x)
            theirs = extractor(result.classes.tolist(), out, normalized=False)[0]
        name = "iscam" if cls is ISCAM else "sscam"
        assert corr(theirs, torch.relu(ours.raw[name])) >= 0.9999


def test_scorecam_peers_use_another_weighting():
    """pytorch-grad-cam's weights are softmax over channels of the masked logits, not the class probability:
    rebuilt from the same masked forwards, its map is reproduced exactly, and differs from the authors'."""
    import torch.nn.functional as F

    model = tiny()
    x = torch.rand(1, 3, 16, 16)
    result = camlens.explain(model, x, ["scorecam"], target_layer="features")
    c = int(result.classes[0])
    A = result.capture.activations
    up = F.interpolate(A, size=(16, 16), mode="bilinear")
    low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    masks = (up - low) / (high - low + 1e-8)
    with torch.no_grad():
        logits = model(x * masks[0][:, None])  # (K, classes)
    pgc_weights = torch.softmax(logits[:, c], dim=0)
    pgc_raw = torch.einsum("k,kij->ij", pgc_weights, A[0])
    theirs = pgc_maps("ScoreCAM", model, "features", x, result.classes)
    assert corr(theirs[0], camlens.postprocess.cam_to_image(pgc_raw[None], (16, 16))[0]) >= 0.999
    authors_weights = torch.softmax(logits, dim=1)[:, c]
    authors_raw = torch.einsum("k,kij->ij", authors_weights, A[0])
    torch.testing.assert_close(result.raw["scorecam"][0], authors_raw, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_legrad_reads_the_attention_probabilities_of_a_timm_vit():
    """The intercepted attention equals timm's explicit (non-fused) attention, whose probabilities pass through
    ``attn_drop``: hooked there on a copy of the model, LeGrad is rebuilt by hand."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=4
    ).eval()
    x = torch.rand(2, 3, 32, 32)
    result = camlens.explain(model, x, ["legrad"], targets=[1, 2])
    copy_model = copy.deepcopy(model)
    kept = []
    for block in copy_model.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: kept.append(o))
    scores = copy_model(x).gather(1, torch.tensor([[1], [2]]))[:, 0]
    grads = torch.autograd.grad(scores.sum(), kept)
    expected = torch.stack([torch.relu(g).mean(dim=(1, 2)) for g in grads]).mean(0)[:, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(result.raw["legrad"], expected, rtol=1e-4, atol=1e-7)
    assert not any(m._forward_hooks for m in model.modules())
