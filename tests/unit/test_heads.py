"""Sigmoid / softmax heads and regression outputs: explained on the score before the squashing.

Oracle: Grad-CAM by hand (a forward hook keeps the layer's output ``A``, ``torch.autograd.grad`` of the logit
gives ``dS/dA``, ``sum_k mean(dS/dA_k) A_k``) on the same network without its final squashing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from helpers import assert_untouched, snapshot


class Body(nn.Module):
    """conv -> relu -> conv -> relu -> GAP -> linear: 4 classes, its own logits."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        convs = (nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(*convs)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class Ends(nn.Module):
    """The body's logits through one squashing, written as a function call."""

    def __init__(self, body: Body, how: str) -> None:
        super().__init__()
        self.body = body
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        return {
            "torch.sigmoid": lambda: torch.sigmoid(z),
            "Tensor.sigmoid": lambda: z.sigmoid(),
            "F.softmax": lambda: F.softmax(z, dim=-1),
            "torch.softmax": lambda: torch.softmax(z, 1),
            "log_softmax": lambda: z.log_softmax(dim=1),
        }[self.how]()


def hand_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, score) -> torch.Tensor:
    """``sum_k mean_ij(dS/dA_kij) A_k`` at ``layer``, with ``S = score(model(x))`` summed over the batch."""
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
    try:
        s = score(model(x))
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(s.sum(), [kept["a"]])
    return (g.mean(dim=(2, 3), keepdim=True) * kept["a"]).sum(1).detach()


@pytest.fixture(scope="module")
def body() -> Body:
    torch.manual_seed(0)
    return Body().eval()


def _models(body: Body) -> dict[str, nn.Module]:
    out: dict[str, nn.Module] = {
        "nn.Sigmoid": nn.Sequential(body, nn.Sigmoid()),
        "nn.Softmax": nn.Sequential(body, nn.Softmax(dim=1)),
        "nn.LogSoftmax": nn.Sequential(body, nn.LogSoftmax(dim=1)),
    }
    for how in ("torch.sigmoid", "Tensor.sigmoid", "F.softmax", "torch.softmax", "log_softmax"):
        out[how] = Ends(body, how)
    return out


KINDS = {
    "nn.Sigmoid": "sigmoid", "torch.sigmoid": "sigmoid", "Tensor.sigmoid": "sigmoid",
    "nn.Softmax": "softmax", "F.softmax": "softmax", "torch.softmax": "softmax",
    "nn.LogSoftmax": "log_softmax", "log_softmax": "log_softmax",
}  # fmt: skip


@pytest.mark.parametrize("name", list(KINDS))
@pytest.mark.parametrize("path", ["layer", "auto", "guided"])
def test_a_squashed_model_is_explained_on_its_logits(body: Body, name: str, path: str) -> None:
    model = _models(body)[name].eval()
    torch.manual_seed(1)
    x = torch.rand(3, 3, 16, 16)
    classes = torch.tensor([0, 2, 3])
    layer = body.features[2]
    before = snapshot(model)
    methods = ["gradcam", "guided_backprop"] if path == "guided" else ["gradcam"]
    # "auto" leaves the layer to the automatic choice, recorded over the whole forward: the last ReLU's output
    result = camlens.explain(model, x, methods, None if path == "auto" else layer, classes)
    assert_untouched(model, before)
    assert result.head == KINDS[name]
    if path == "auto":
        assert result.target_layer.endswith("features")  # the Sequential, whose output is the ReLU's
    logits = body(x).detach()
    torch.testing.assert_close(result.scores, logits.gather(1, classes[:, None])[:, 0])
    torch.testing.assert_close(result.logits, logits)
    hand_layer = body.features[3] if path == "auto" else layer
    expected = hand_gradcam(body, hand_layer, x, lambda z: z.gather(1, classes[:, None])[:, 0])
    torch.testing.assert_close(result.raw["gradcam"], expected, rtol=1e-5, atol=1e-6)
    if name.endswith("igmoid"):
        torch.testing.assert_close(result.probabilities, torch.sigmoid(logits))
    else:
        torch.testing.assert_close(result.probabilities, torch.softmax(logits, 1))


def test_a_saturated_class_has_no_gradient_on_the_probability_but_a_map_on_the_logit() -> None:
    torch.manual_seed(0)
    body = Body().eval()
    with torch.no_grad():
        body.fc.bias[1] = 60.0  # sigmoid(z_1) == 1.0 exactly in float32
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    x = torch.rand(2, 3, 16, 16)
    layer = body.features[2]
    on_probability = hand_gradcam(model, layer, x, lambda p: p[:, 1])
    on_logit = hand_gradcam(body, layer, x, lambda z: z[:, 1])
    assert not on_probability.any()  # the gradient through a saturated sigmoid is exactly zero
    span = on_logit.flatten(1).amax(1) - on_logit.flatten(1).amin(1)
    assert bool((span > 1e3 * torch.finfo(torch.float32).eps * on_logit.abs().flatten(1).amax(1)).all())
    result = camlens.explain(model, x, ["gradcam"], layer, 1)
    assert result.head == "sigmoid"
    torch.testing.assert_close(result.raw["gradcam"], on_logit, rtol=1e-5, atol=1e-6)
    assert not any("constant" in w for w in result.warnings)


class Gated(nn.Module):
    """A squeeze-and-excitation gate inside, plain logits out; and a sigmoid that is not the output."""

    def __init__(self, scaled: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 4)
        self.scaled = scaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        a = a * torch.sigmoid(self.gate(a.mean(dim=(2, 3))))[:, :, None, None]
        z = self.fc(a.mean(dim=(2, 3)))
        return torch.sigmoid(z) * 2.0 if self.scaled else z


@pytest.mark.parametrize("scaled", [False, True])
def test_a_sigmoid_that_is_not_the_output_is_not_the_head(scaled: bool) -> None:
    torch.manual_seed(0)
    model = Gated(scaled).eval()
    x = torch.rand(2, 3, 16, 16)
    for layer in (model.conv, None):
        result = camlens.explain(model, x, ["gradcam"], layer, 0)
        assert result.head is None
        torch.testing.assert_close(result.scores, model(x)[:, 0].detach())


def test_a_callable_target_sees_the_raw_output(body: Body) -> None:
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, ["gradcam"], body.features[2], lambda p: p[:, 2])
    assert result.head is None
    torch.testing.assert_close(result.scores, model(x)[:, 2].detach())


class Regressor(nn.Module):
    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.body = Body(classes=1)
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out if self.keep else out[:, 0]


@pytest.mark.parametrize("keep", [False, True], ids=["(B,)", "(B, 1)"])
def test_a_regression_output_is_explained_without_a_target(keep: bool) -> None:
    torch.manual_seed(0)
    model = Regressor(keep).eval()
    x = torch.rand(3, 3, 16, 16)
    layer = model.body.features[2]
    before = snapshot(model)
    result = camlens.explain(model, x, ["gradcam", "gradcam++"], layer)
    assert_untouched(model, before)
    assert result.head == "regression"
    value = model.body(x)[:, 0].detach()
    torch.testing.assert_close(result.scores, value)
    expected = hand_gradcam(model.body, layer, x, lambda y: y[:, 0])
    torch.testing.assert_close(result.raw["gradcam"], expected, rtol=1e-5, atol=1e-6)
    assert result.probabilities is None
    auto = camlens.explain(model, x, ["gradcam"])
    assert auto.head == "regression" and auto.target_layer == "body.features"
    after_relu = hand_gradcam(model.body, model.body.features[3], x, lambda y: y[:, 0])
    torch.testing.assert_close(auto.raw["gradcam"], after_relu, rtol=1e-5, atol=1e-6)


def test_a_one_output_sigmoid_is_explained_on_its_logit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Body(classes=1), nn.Sigmoid()).eval()
    x = torch.rand(2, 3, 16, 16)
    layer = model[0].features[2]
    result = camlens.explain(model, x, ["gradcam"], layer)
    assert result.head == "sigmoid"
    torch.testing.assert_close(result.scores, model[0](x)[:, 0].detach())
    expected = hand_gradcam(model[0], layer, x, lambda y: y[:, 0])
    torch.testing.assert_close(result.raw["gradcam"], expected, rtol=1e-5, atol=1e-6)


def test_a_plain_classifier_is_explained_as_before(body: Body) -> None:
    x = torch.rand(2, 3, 16, 16)
    layer = body.features[2]
    result = camlens.explain(body, x, ["gradcam"], layer)
    assert result.head is None and result.image_index is None
    logits = body(x).detach()
    torch.testing.assert_close(result.logits, logits)
    assert result.classes.tolist() == logits.argmax(1).tolist()
    torch.testing.assert_close(result.scores, logits.amax(1))
    torch.testing.assert_close(result.probabilities, logits.softmax(1))
    expected = hand_gradcam(body, layer, x, lambda z: z.gather(1, z.argmax(1, keepdim=True))[:, 0])
    torch.testing.assert_close(result.raw["gradcam"], expected, rtol=1e-5, atol=1e-6)


# every method that runs on a small CNN, on (model with a final sigmoid) against (the body's own logits)
SAME_ON_LOGITS = [
    "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "fem", "eigencam",
    "eigengradcam", "kpcacam", "refinecam", "fullgrad", "cam", "finercam", "shapleycam", "ablationcam",
    "sscam", "iscam", "smoothgradcam++", "sess", "guided_backprop", "guided_gradcam",
]  # fmt: skip
ON_PROBABILITY = ["scorecam"]  # its weights are the class probability: the sigmoid's here


def _raw(result: camlens.Explanation, name: str) -> torch.Tensor:
    return result.raw[name] if name in result.raw else result.maps[name]


def test_every_method_explains_a_sigmoid_model_on_its_logits(body: Body) -> None:
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 32, 32)
    before = snapshot(model)
    options = {"num_samples": 2, "seed": 0}
    squashed = camlens.explain(model, x, SAME_ON_LOGITS, "0.features", 2, **options)
    plain = camlens.explain(body, x, SAME_ON_LOGITS, "features", 2, **options)
    assert_untouched(model, before)
    assert squashed.head == "sigmoid" and plain.head is None
    for name in SAME_ON_LOGITS:
        torch.testing.assert_close(_raw(squashed, name), _raw(plain, name), rtol=1e-5, atol=1e-6, msg=name)
    # Score-CAM's weight is the probability of the class: a callable target's raw score, sigmoid(z_2), on the body
    probability = camlens.explain(model, x, ON_PROBABILITY, "0.features", 2, **options)
    by_hand = camlens.explain(body, x, ON_PROBABILITY, "features", lambda z: torch.sigmoid(z)[:, 2], **options)
    for name in ON_PROBABILITY:
        torch.testing.assert_close(probability.raw[name], by_hand.raw[name], rtol=1e-5, atol=1e-6, msg=name)


REGRESSION_METHODS = ["gradcam", "hirescam", "fullgrad", "ablationcam", "scorecam", "shapleycam", "guided_backprop"]


@pytest.mark.parametrize("keep", [False, True], ids=["(B,)", "(B, 1)"])
def test_every_kind_of_method_explains_a_regression_output_on_its_value(keep: bool) -> None:
    torch.manual_seed(0)
    model = Regressor(keep).eval()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, REGRESSION_METHODS, "body.features")
    # reference: the value as a callable target (its raw score, no softmax), the pre-existing route
    by_hand = camlens.explain(model, x, REGRESSION_METHODS, "body.features", lambda y: y.reshape(len(y), -1)[:, 0])
    assert result.head == "regression"
    for name in REGRESSION_METHODS:
        torch.testing.assert_close(_raw(result, name), _raw(by_hand, name), rtol=1e-5, atol=1e-6, msg=name)


LABELS = [[0, 2], [1], [3, 0, 1]]


@pytest.mark.parametrize(
    "form", ["lists", "tensors", "multi-hot", "(B, L)"],
)
def test_several_labels_per_image_equal_one_call_per_label(body: Body, form: str) -> None:
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    torch.manual_seed(3)
    x = torch.rand(3, 3, 16, 16)
    layer = body.features[2]
    labels: object
    if form == "lists":
        labels, expected = LABELS, LABELS
    elif form == "tensors":
        labels, expected = [torch.tensor(row) for row in LABELS], LABELS
    elif form == "multi-hot":
        labels = torch.zeros(3, 4, dtype=torch.bool)
        for i, row in enumerate(LABELS):
            labels[i, row] = True
        expected = [sorted(row) for row in LABELS]  # a mask's labels come in class order
    else:
        labels, expected = torch.tensor([[0, 2], [1, 3], [3, 0]]), [[0, 2], [1, 3], [3, 0]]
    before = snapshot(model)
    result = camlens.explain(model, x, ["gradcam", "ablationcam", "guided_backprop"], layer, labels)
    assert_untouched(model, before)
    pairs = [(i, c) for i, row in enumerate(expected) for c in row]
    assert result.image_index.tolist() == [i for i, _ in pairs]
    assert result.classes.tolist() == [c for _, c in pairs]
    assert result.head == "sigmoid"
    for r, (i, c) in enumerate(pairs):
        alone = camlens.explain(model, x[i : i + 1], ["gradcam", "ablationcam", "guided_backprop"], layer, c)
        for name in ("gradcam", "ablationcam"):
            torch.testing.assert_close(result.raw[name][r : r + 1], alone.raw[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["guided_backprop"][r : r + 1], alone["guided_backprop"])
        torch.testing.assert_close(result.scores[r : r + 1], alone.scores)
        expected_map = hand_gradcam(body, layer, x[i : i + 1], lambda z, c=c: z[:, c])
        torch.testing.assert_close(result.raw["gradcam"][r : r + 1], expected_map, rtol=1e-5, atol=1e-6)
    pictures = result.overlay([x[i].permute(1, 2, 0).numpy() for i in range(3)], "gradcam")
    assert len(pictures) == len(pairs)


def test_an_image_without_labels_has_no_row_and_bad_label_lists_are_refused(body: Body) -> None:
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, ["gradcam"], body.features[2], [[], [1, 3]])
    assert result.image_index.tolist() == [1, 1] and result.classes.tolist() == [1, 3]
    with pytest.raises(ValueError, match="3 lists of labels for a batch of 2"):
        camlens.explain(model, x, ["gradcam"], body.features[2], [[0], [1], [2]])
    with pytest.raises(ValueError, match="no label"):
        camlens.explain(model, x, ["gradcam"], body.features[2], torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="out of range"):
        camlens.explain(model, x, ["gradcam"], body.features[2], [[0], [4]])
    with pytest.raises(TypeError, match="integer class indices or a bool multi-hot"):
        camlens.explain(model, x, ["gradcam"], body.features[2], torch.ones(2, 4))
    with pytest.raises(TypeError, match="must hold ints"):
        camlens.explain(model, x, ["gradcam"], body.features[2], [[0.5], [1]])
    plain = camlens.explain(model, x, ["gradcam"], body.features[2], [0, 1])
    assert plain.image_index is None


def test_a_multi_label_result_saves_a_picture_set_per_image_and_label(body: Body, tmp_path) -> None:
    model = nn.Sequential(body, nn.Sigmoid()).eval()
    x = torch.rand(2, 3, 16, 16)
    result = camlens.explain(model, x, ["gradcam"], body.features[2], [[0, 2], [1]])
    images = [(x[i].permute(1, 2, 0).numpy() * 255).astype("uint8") for i in range(2)]
    written = result.save(tmp_path, images, annotate=False)
    stems = sorted({p.name.split("-model-")[0] for p in written})
    assert stems == ["image0-class0", "image0-class2", "image1-class1"]
