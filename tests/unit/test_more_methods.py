"""Oracle tests for the CAM family beyond Grad-CAM: hand-computed maps, the GAP identities, closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.methods.activation import eigencam, fem, first_component, kpcacam
from camlens.methods.gradcam import gradcam_elementwise
from camlens.names import VIT_ONLY_METHODS
from camlens.postprocess import cam_to_image, normalize_per_image
from helpers import corr
from unit.test_cam_oracles import conv_head, identity_head


class Tiny(nn.Module):
    """conv-relu-conv-relu -> GAP -> linear: small and fast, with a non-trivial layer map."""

    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.ReLU()
        )
        self.fc = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def tiny() -> Tiny:
    return Tiny().eval()


def test_gap_identities_of_the_family():
    """METHODS.md: at the GAP input XGrad-CAM = HiResCAM = Grad-CAM, LayerCAM = ReLU(W)A / Z, CAM = Z Grad-CAM,
    ShapleyCAM = Grad-CAM (the head is linear, its Hessian vanishes)."""
    model = conv_head(seed=3)
    x = torch.randn(3, 3, 5, 6)
    classes = torch.tensor([0, 2, 3])
    names = ["gradcam", "xgradcam", "hirescam", "layercam", "cam", "shapleycam"]
    result = camlens.explain(model, x, names, target_layer="features", targets=classes)
    A = result.capture.activations
    W = model.fc.weight.detach()[classes]
    Z = A.shape[2] * A.shape[3]
    cam_2016 = torch.einsum("bk,bkij->bij", W, A)
    for name in ("gradcam", "xgradcam", "hirescam", "shapleycam"):
        torch.testing.assert_close(result.raw[name] * Z, cam_2016, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.raw["cam"], cam_2016, rtol=1e-5, atol=1e-5)
    layercam_expected = torch.einsum("bk,bkij->bij", torch.relu(W), A) / Z
    torch.testing.assert_close(result.raw["layercam"], layercam_expected, rtol=1e-5, atol=1e-6)


def test_hand_computed_elementwise_xgrad_and_fem():
    A = torch.tensor([[[[1.0, 2.0], [3.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]]])
    g = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]], [[-1.0, 1.0], [1.0, 1.0]]]])
    # element-wise: ReLU(gA) per channel: (1, 0, 1.5, 0) + (0, 0, 0, 0)
    torch.testing.assert_close(gradcam_elementwise(A, g), torch.tensor([[[1.0, 0.0], [1.5, 0.0]]]))
    # xgrad: w0 = (1 - 2 + 1.5 + 0) / 6 = 0.5/6; w1 = -2 / 2 = -1
    result = camlens.methods.CAM_METHODS["xgradcam"](A, g)
    torch.testing.assert_close(result, (0.5 / 6) * A[:, 0] - A[:, 1])
    # fem: channel 1 = (2, 0, 0, 0): mean 0.5, std sqrt(0.75) = 0.866: threshold 2.23: nothing above
    # channel 0: mean 1.5, std 1.118: threshold 3.74: nothing above -> zero map; one outlier in 9 does it
    torch.testing.assert_close(fem(A, g), torch.zeros(1, 2, 2))
    B = torch.zeros(1, 1, 3, 3)
    B[0, 0, 1, 1] = 9.0  # mean 1, std sqrt(8) = 2.83: threshold 6.66 < 9
    torch.testing.assert_close(fem(B, B), B[:, 0] / 9)


def test_eigencam_is_the_rank_one_pattern_with_a_fixed_sign():
    pattern = torch.tensor([[0.0, 1.0, 3.0], [2.0, 5.0, 1.0]])
    scales = torch.tensor([2.0, 1.0, 0.5])
    A = (scales[:, None, None] * pattern)[None]
    expected = (pattern - pattern.mean()) * scales.norm()
    torch.testing.assert_close(eigencam(A, A), expected[None], rtol=1e-5, atol=1e-5)
    # the same data with every channel negated: the projection's sign follows the (now negative) mean
    torch.testing.assert_close(eigencam(-A, -A), -expected[None], rtol=1e-5, atol=1e-5)
    # and it never depends on the LAPACK sign: a permutation of channels gives the same map
    torch.testing.assert_close(eigencam(A[:, [2, 0, 1]], A), expected[None], rtol=1e-5, atol=1e-5)


def test_kpcacam_matches_scikit_learn_up_to_its_arbitrary_sign():
    sklearn = pytest.importorskip("sklearn.decomposition")
    torch.manual_seed(0)
    A = torch.relu(torch.randn(2, 6, 4, 5))
    ours = kpcacam(A, A)
    for b in range(2):
        matrix = A[b].flatten(1).T.double().numpy()
        matrix = matrix - matrix.mean(axis=0)
        theirs = sklearn.KernelPCA(n_components=1, kernel="sigmoid").fit_transform(matrix)[:, 0]
        assert abs(corr(torch.from_numpy(theirs), ours[b])) >= 0.9999
        # sign: positive correlation with the mean activation
        assert corr(ours[b], A[b].mean(0)) > 0


def test_finercam_is_gradcam_of_the_comparison_score():
    """The gradient at the GAP input of S' = sum_j p_j (y_c - y_j) / sum_j p_j, by hand through the logits."""
    model = conv_head(seed=1, classes=6)
    x = torch.randn(2, 3, 5, 5)
    classes = torch.tensor([1, 4])
    result = camlens.explain(model, x, ["finercam"], target_layer="features", targets=classes)
    A = result.capture.activations
    logits = model(x).detach().requires_grad_(True)
    rows = []
    for b in range(2):
        c = int(classes[b])
        distance = (logits[b] - logits[b, c]).abs().detach()
        distance[c] = float("inf")
        similar = distance.argsort()[:3]
        p = torch.softmax(logits[b], 0)[similar]
        rows.append((p * (logits[b, c] - logits[b, similar])).sum() / p.sum())
    (dlogits,) = torch.autograd.grad(torch.stack(rows).sum(), logits)
    Z = A.shape[2] * A.shape[3]
    weights = dlogits @ model.fc.weight.detach() / Z  # dS'/dA_kij = sum_n dS'/dy_n W_nk / Z
    torch.testing.assert_close(result.raw["finercam"], torch.einsum("bk,bkij->bij", weights, A), rtol=1e-5, atol=1e-6)


class Quadratic(nn.Module):
    """S_n = sum_k C_nk m_k^2 with m_k = mean_ij A_kij: a head whose Hessian is known."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.c = nn.Parameter(c, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x).mean(dim=(2, 3)) ** 2) @ self.c.T


def test_shapleycam_hand_computed_with_a_curved_head():
    # g_k = 2 c_k m_k / Z; (H A)_k = 2 c_k m_k / Z; w_k = mean(g - HA/2) = c_k m_k / Z
    c = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, 0.1]])
    A = torch.rand(2, 3, 3, 4) + 0.1
    result = camlens.explain(Quadratic(c), A, ["shapleycam", "gradcam"], target_layer="features", targets=0)
    Z = 12
    m = A.mean(dim=(2, 3))
    expected = torch.einsum("bk,bkij->bij", c[0] * m / Z, A)
    torch.testing.assert_close(result.raw["shapleycam"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.raw["gradcam"], 2 * expected, rtol=1e-5, atol=1e-6)


def test_cam_needs_a_gap_linear_head():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    with pytest.raises(ValueError, match="gradcam"):
        camlens.explain(model, torch.rand(1, 3, 8, 8), ["cam"], target_layer="1")


def test_ablationcam_hand_computed_on_a_linear_head():
    """S = sum_k W_k m_k + b and S_k = S - W_k m_k, so w_k = W_k m_k / S exactly."""
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.5, 1.0, 1.0]])
    model = identity_head(weight, torch.tensor([0.2, 0.1]))
    A = torch.rand(2, 3, 3, 3)
    A[0, 2] = 0  # an all-zero channel: skipped, weight 0
    result = camlens.explain(model, A, ["ablationcam"], target_layer="features", targets=[0, 1], batch_size=2)
    for b, c in enumerate([0, 1]):
        m = A[b].mean(dim=(1, 2))
        score = weight[c] @ m + (0.2, 0.1)[c]
        expected = torch.einsum("k,kij->ij", weight[c] * m / score, A[b])
        torch.testing.assert_close(result.raw["ablationcam"][b], expected, rtol=1e-5, atol=1e-6)


class BatchFromInput(nn.Module):
    """A tail that reads the batch size off the input: it cannot take a larger batch than it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Tiny()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.inner.features(x)
        pooled = features.mean(dim=(2, 3)).reshape(x.shape[0], -1)
        return self.inner.fc(pooled)


def test_ablationcam_tail_trick_and_its_fallback_agree():
    from camlens.methods import score

    x = torch.rand(2, 3, 12, 12)
    fast = camlens.explain(tiny(), x, ["ablationcam"], target_layer="features", batch_size=5)
    slow = camlens.explain(BatchFromInput().eval(), x, ["ablationcam"], target_layer="inner.features", batch_size=5)
    torch.testing.assert_close(fast.raw["ablationcam"], slow.raw["ablationcam"], rtol=1e-4, atol=1e-6)
    # the traced tail ran on the plain model; on the other, the tail reads the input's batch size: the
    # cut is refused, the one-upstream hook gives a wrong-sized output, and full forwards are used
    from camlens.methods.context import MethodContext, MethodOptions

    for model, layer, expect in ((tiny(), "features", "tail"), (BatchFromInput().eval(), "inner.features", "full")):
        cap = camlens.capture(model, x, None, camlens.resolve_layer(model, layer))
        context = MethodContext(model, x, None, camlens.resolve_layer(model, layer), cap, MethodOptions())
        variants = cap.activations[:1].expand(3, -1, -1, -1).clone()
        scores, used = score.layer_tail_scores(context, 0, variants)
        assert used == expect
        torch.testing.assert_close(scores, cap.scores[:1].expand(3), rtol=1e-5, atol=1e-6)


def authors_scorecam(model: nn.Module, x: torch.Tensor, layer: nn.Module, classes: torch.Tensor) -> torch.Tensor:
    """The Score-CAM authors' loop, written out: per channel, upsample, skip constant, min-max, softmax prob."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    maps = []
    for b in range(x.shape[0]):
        total = torch.zeros(x.shape[-2:])
        for k in range(store["A"].shape[1]):
            up = F.interpolate(store["A"][b : b + 1, k : k + 1], size=x.shape[-2:], mode="bilinear")
            if up.max() == up.min():
                continue
            norm = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                p = torch.softmax(model(x[b : b + 1] * norm), dim=1)[0, classes[b]]
            total += p * up[0, 0]
        maps.append(total)
    return torch.stack(maps)


def test_scorecam_is_the_authors_variant():
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    result = camlens.explain(model, x, ["scorecam"], target_layer="features", targets=[1, 3], batch_size=4)
    expected = authors_scorecam(model, x, model.features, torch.tensor([1, 3]))
    # sum_k w_k up(A_k) = up(sum_k w_k A_k): compare before and after the display post-processing
    upsampled = F.interpolate(result.raw["scorecam"][:, None], size=(12, 12), mode="bilinear")[:, 0]
    torch.testing.assert_close(upsampled, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result["scorecam"], normalize_per_image(torch.relu(expected)), rtol=1e-4, atol=1e-4)


def test_smoothgradcam_plus_plus_without_noise_is_gradcam_plus_plus():
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    result = camlens.explain(model, x, ["smoothgradcam++", "gradcam++"], target_layer="features", noise_std=0.0)
    torch.testing.assert_close(result.raw["smoothgradcam++"], result.raw["gradcam++"], rtol=1e-5, atol=1e-6)


def test_smoothgradcam_plus_plus_averages_gradient_powers():
    """Eq. 9-10 of Omeiza et al. written out with the same seeded noise."""
    model = tiny()
    x = torch.rand(1, 3, 12, 12)
    result = camlens.explain(model, x, ["smoothgradcam++"], target_layer="features", targets=2, num_samples=3, seed=5)
    generator = torch.Generator().manual_seed(5)
    layer = camlens.resolve_layer(model, "features")
    grads = [
        camlens.capture(model, x + 0.3 * torch.randn(x.shape, generator=generator), 2, layer).gradients
        for _ in range(3)
    ]
    d1, d2, d3 = (sum(g**p for g in grads) / 3 for p in (1, 2, 3))
    A = result.capture.activations
    alpha = d2 / (2 * d2 + A.sum(dim=(2, 3), keepdim=True) * d3)
    alpha = torch.nan_to_num(alpha)
    w = (alpha * torch.relu(d1)).sum(dim=(2, 3))
    torch.testing.assert_close(result.raw["smoothgradcam++"], torch.einsum("bk,bkij->bij", w, A), rtol=1e-4, atol=1e-6)


def test_fullgrad_is_complete():
    """Full-gradient completeness (Srinivas & Fleuret, Eq. 3): sum(x dS/dx) + sum_l sum(b_l dS/dz_l) = S."""
    from camlens.methods.context import MethodContext, MethodOptions
    from camlens.methods.fullgrad import full_gradients

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )  # fmt: skip
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(2, 3, 10, 10)
    cap = camlens.capture(model, x, None, None, guided=True)
    scores, input_term, bias_terms = full_gradients(MethodContext(model, x, None, None, cap, MethodOptions()))
    total = input_term.flatten(1).sum(1) + sum(term.flatten(1).sum(1) for term, _ in bias_terms)
    torch.testing.assert_close(total, scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, cap.scores)
    result = camlens.explain(model, x, ["fullgrad"])
    assert result["fullgrad"].shape == (2, 10, 10)
    # the input term alone, post-processed by hand, is part of the map: removing it changes it
    assert corr(result.raw["fullgrad"], input_term.abs().sum(1)) > 0.3


def test_sess_at_one_scale_is_the_base_map():
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    result = camlens.explain(model, x, ["sess", "gradcam"], target_layer="features", num_samples=1)
    torch.testing.assert_close(result["sess"], result["gradcam"], rtol=1e-5, atol=1e-5)


def test_sess_fuses_windows_over_scales():
    model = tiny()
    x = torch.rand(1, 3, 12, 16)  # windows of 12 slide along the width
    result = camlens.explain(model, x, ["sess"], target_layer="features", num_samples=2, batch_size=3)
    assert result["sess"].shape == (1, 12, 16)
    assert torch.isfinite(result["sess"]).all() and result["sess"].max() == 1


def test_multi_layer_layercam_is_the_max_and_refinecam_the_product():
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    layers = ["features.1", "features.3"]
    fused = camlens.explain(model, x, ["layercam", "refinecam", "gradcam"], target_layer=layers)
    singles = [camlens.explain(model, x, ["layercam", "gradcam++", "gradcam"], target_layer=n) for n in layers]
    torch.testing.assert_close(fused["layercam"], torch.maximum(singles[0]["layercam"], singles[1]["layercam"]))
    expected = normalize_per_image(singles[0]["gradcam++"] * singles[1]["gradcam++"])
    torch.testing.assert_close(fused["refinecam"], expected)
    torch.testing.assert_close(
        fused["gradcam"], normalize_per_image((singles[0]["gradcam"] + singles[1]["gradcam"]) / 2)
    )
    assert fused.target_layer == "features.1+features.3"


def test_eigen_smooth_projects_the_weighted_activations():
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    result = camlens.explain(model, x, ["gradcam", "layercam"], target_layer="features", eigen_smooth=True)
    A, g = result.capture.activations, result.capture.gradients
    terms = g.mean(dim=(2, 3))[:, :, None, None] * A
    torch.testing.assert_close(result.raw["gradcam"], first_component(terms, terms.sum(1)), rtol=1e-4, atol=1e-6)
    layer_terms = torch.relu(g) * A
    torch.testing.assert_close(
        result.raw["layercam"], first_component(layer_terms, layer_terms.sum(1)), rtol=1e-4, atol=1e-6
    )


def test_aug_smooth_averages_the_mapped_back_augmentations():
    model = tiny()
    x = torch.rand(1, 3, 20, 20)
    result = camlens.explain(model, x, ["gradcam"], target_layer="features", aug_smooth=True)
    plain = camlens.explain(model, x, ["gradcam"], target_layer="features")
    total = torch.zeros(1, 20, 20)
    for flip in (False, True):
        for size in (20, 22, 18):
            view = torch.flip(x, [-1]) if flip else x
            view = F.interpolate(view, size=(size, size), mode="bilinear") if size != 20 else view
            m = camlens.explain(model, view, ["gradcam"], target_layer="features", targets=plain.classes)["gradcam"]
            m = F.interpolate(m[:, None], size=(20, 20), mode="bilinear")[:, 0] if size != 20 else m
            total += torch.flip(m, [-1]) if flip else m
    torch.testing.assert_close(result["gradcam"], normalize_per_image(total / 6), rtol=1e-5, atol=1e-5)


PER_IMAGE = [n for n in camlens.available_methods() if n not in (*VIT_ONLY_METHODS, "sscam", "iscam", "sess")]


@pytest.mark.parametrize("method", PER_IMAGE)
def test_per_image_targets_equal_single_images(method):
    """Targets per image for every method: a batch of two with classes (1, 3) equals the two singles."""
    model = tiny()
    x = torch.rand(2, 3, 12, 12)
    both = camlens.explain(model, x, [method], target_layer="features", targets=[1, 3], batch_size=7)
    for b, c in enumerate((1, 3)):
        one = camlens.explain(model, x[b : b + 1], [method], target_layer="features", targets=c, batch_size=7)
        torch.testing.assert_close(both[method][b], one[method][0], rtol=1e-4, atol=1e-4)
    # and the class matters: another class gives another map (fem, eigencam, kpcacam are class-agnostic)
    if method not in ("fem", "eigencam", "kpcacam", "guided_backprop", "guided_gradcam"):
        other = camlens.explain(model, x[:1], [method], target_layer="features", targets=0, batch_size=7)
        assert not torch.allclose(other[method][0], both[method][0], atol=1e-3)


def test_every_method_has_a_class():
    import camlens.explainers as explainers

    for name in camlens.available_methods():
        cls = explainers.explainer_class(name)
        assert cls.method == name
    cam = explainers.ScoreCAM(tiny(), "features", batch_size=4)
    x = torch.rand(1, 3, 12, 12)
    expected = camlens.explain(cam.model, x, ["scorecam"], target_layer="features", targets=2)["scorecam"]
    torch.testing.assert_close(cam(x, targets=2), expected)
    assert repr(cam) == "ScoreCAM(Tiny, target_layer='features')"


def test_perturbation_methods_leave_the_model_untouched():
    from helpers import assert_untouched, snapshot

    model = tiny()
    model.features[1].inplace = True
    before = snapshot(model)
    x = torch.rand(1, 3, 12, 12)
    camlens.explain(
        model, x, ["ablationcam", "scorecam", "fullgrad", "finercam", "shapleycam"], target_layer="features"
    )
    assert_untouched(model, before)


def test_cam_to_image_of_layer_free_methods_keeps_the_input_size():
    assert cam_to_image(torch.rand(1, 12, 12), (12, 12)).shape == (1, 12, 12)


def test_ablation_tail_cut_is_refused_around_a_skip_connection_and_every_way_agrees():
    """A layer inside a residual block: the part after it also reads the block's input, so no cut is
    made (the hook way runs); at the stage output the cut is made. All ways give the full-forward scores."""
    import torchvision

    from camlens.methods import score
    from camlens.methods.context import MethodContext, MethodOptions
    from camlens.methods.tail import layer_tail

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(1, 3, 64, 64)
    for layer, expect in (("layer4.0.conv1", "hook"), ("layer4", "tail")):
        assert (layer_tail(model, layer) is not None) is (expect == "tail")
        resolved = camlens.resolve_layer(model, layer)
        cap = camlens.capture(model, x, None, resolved)
        context = MethodContext(model, x, None, resolved, cap, MethodOptions())
        variants = cap.activations.expand(4, -1, -1, -1).clone()
        for k in range(4):
            variants[k, k] = 0
        scores, how = score.layer_tail_scores(context, 0, variants)
        reference, way = score.layer_tail_scores(context, 0, variants, check=False, how="full")
        assert (how, way) == (expect, "full")
        torch.testing.assert_close(scores, reference, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(scores, cap.scores.expand(4))  # the ablations changed the scores


class ChannelsLast(nn.Module):
    """A channels-last stage, as in Swin / ConvNeXt: conv, then (B, H, W, C) through a LayerNorm, pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def hand_ablation(model, x, module, to_spatial, zero_channel, classes):
    """Ablation-CAM written out: per channel a full forward with the layer's output edited by a hook."""
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("out", o.detach()))
    with torch.no_grad():
        base = model(x).gather(1, classes[:, None])[:, 0]
    handle.remove()
    spatial = to_spatial(store["out"])
    maps = []
    for b in range(x.shape[0]):
        weights = torch.zeros(spatial.shape[1])
        for k in range(spatial.shape[1]):
            handle = module.register_forward_hook(lambda m, i, o, k=k: zero_channel(o.clone(), k))
            with torch.no_grad():
                s_k = model(x[b : b + 1])[0, classes[b]]
            handle.remove()
            weights[k] = (base[b] - s_k) / base[b]
        maps.append((weights.view(-1, 1, 1) * spatial[b]).sum(0))
    return torch.stack(maps)


def test_ablation_and_score_cam_on_token_and_channels_last_layers_follow_the_hand_reference():
    from camlens.synthetic import TinyViT

    def zero_tokens(o, k):
        o[:, 1:, k] = 0  # patch tokens only: the class token is kept
        return o

    def zero_last(o, k):
        o[..., k] = 0
        return o

    torch.manual_seed(0)
    vit = TinyViT(size=16, patch=4, dim=8, depth=2).eval()
    cases = (
        (vit, "blocks.1.norm1", lambda t: t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2), zero_tokens),
        (ChannelsLast().eval(), "norm", lambda t: t.permute(0, 3, 1, 2), zero_last),
    )
    for model, layer, to_spatial, zero in cases:
        x = torch.rand(2, 3, 16, 16)
        result = camlens.explain(model, x, ["ablationcam", "scorecam"], target_layer=layer, batch_size=3)
        assert result.layout.kind in ("tokens", "nhwc")
        module = camlens.resolve_layer(model, layer)[1]
        expected = hand_ablation(model, x, module, to_spatial, zero, result.classes)
        torch.testing.assert_close(result.raw["ablationcam"], expected, rtol=1e-4, atol=1e-5)
        # Score-CAM reads only the (B, K, u, v) view: the authors' loop on that view
        store = {}
        handle = module.register_forward_hook(lambda m, i, o, s=store, f=to_spatial: s.__setitem__("A", f(o.detach())))
        with torch.no_grad():
            model(x)
        handle.remove()
        weights = torch.zeros(2, store["A"].shape[1])
        for b in range(2):
            for k in range(store["A"].shape[1]):
                up = F.interpolate(store["A"][b : b + 1, k : k + 1], size=(16, 16), mode="bilinear")
                if up.max() > up.min():
                    with torch.no_grad():
                        p = torch.softmax(model(x[b : b + 1] * (up - up.min()) / (up.max() - up.min())), 1)
                    weights[b, k] = p[0, result.classes[b]]
        torch.testing.assert_close(
            result.raw["scorecam"], (weights[:, :, None, None] * store["A"]).sum(1), rtol=1e-4, atol=1e-5
        )


def test_a_method_registered_for_channels_first_layers_is_refused_on_tokens():
    """finercam and shapleycam run on every layout (tests/unit/test_head_methods_layouts.py); a method
    registered without ``any_layout`` is still refused on a token layer, naming why."""
    from camlens.methods import CONTEXT_METHODS, register_method
    from camlens.synthetic import TinyViT

    @register_method("test_native_only", perturbation=True)
    def native_only(context):
        return context.activations[:, 0]

    vit = TinyViT(size=16, patch=4, dim=8, depth=2).eval()
    try:
        with pytest.raises(ValueError, match="test_native_only need a channels-first"):
            camlens.explain(vit, torch.rand(1, 3, 16, 16), ["test_native_only"], target_layer="blocks.1.norm1")
    finally:
        del CONTEXT_METHODS["test_native_only"]
