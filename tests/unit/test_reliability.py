"""Reliability: buffers in train() mode, threads, compiled and scripted models, odd targets, huge images."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import camlens
from helpers import assert_untouched, build, snapshot

ALL_METHODS = ["gradcam", "gradcam++", "guided_backprop", "guided_gradcam"]


def tiny_resnet(seed: int = 0) -> nn.Module:
    """A random resnet with one block per stage (same code paths as resnet18, a fraction of the cost)."""
    torch.manual_seed(seed)
    return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10).eval()


def relu6_net(seed: int = 0) -> nn.Module:
    """Batch norm, ReLU6, functional-style pooling: a model for guided backprop in training mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU6(inplace=True),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )


# ---------------------------------------------------------------------------------------- train() mode
def hand_gradcam(model: nn.Module, x: torch.Tensor, layer_name: str, classes: list[int]):
    """Grad-CAM written out: forward as the model is (train mode here), dS/dA by autograd, Eq. 1-2."""
    layer = dict(model.named_modules())[layer_name]
    kept = {}

    def keep(_module, _inputs, output):
        kept["A"] = output

    handle = layer.register_forward_hook(keep)
    try:
        logits = model(x)
    finally:
        handle.remove()
    scores = logits[torch.arange(len(classes)), torch.tensor(classes)]
    (g,) = torch.autograd.grad(scores.sum(), kept["A"])
    weights = g.mean(dim=(2, 3), keepdim=True)
    return (weights * kept["A"]).sum(1).detach(), logits.detach()


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "layer"), [("resnet18", "layer4"), ("mobilenet_v2", "features.18")])
def test_train_mode_explained_as_left_with_every_buffer_restored(arch, layer):
    model = build(arch).train()
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    reference = copy.deepcopy(model)  # the same model, to run the train-mode forward by hand
    before = snapshot(model)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    assert any(name.endswith("num_batches_tracked") for name in buffers)

    torch.manual_seed(7)  # mobilenet_v2's classifier dropout is active in train mode: same masks below
    result = camlens.explain(model, x, ["gradcam"], target_layer=layer, targets=[1, 2])
    assert_untouched(model, before)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"{name} changed"
    assert all(m.training for m in model.modules())

    torch.manual_seed(7)
    raw, logits = hand_gradcam(reference, x, layer, [1, 2])
    torch.testing.assert_close(result.logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.raw["gradcam"], raw, rtol=1e-4, atol=1e-6)
    # the reference really ran in train mode (its statistics moved), so the match above means "as left"
    moved = [n for n, b in reference.named_buffers() if n.endswith("running_mean") and not torch.equal(b, buffers[n])]
    assert len(moved) == sum(n.endswith("running_mean") for n in buffers)

    # a call that raises after the forward (class out of range) leaves every buffer as well
    with pytest.raises(ValueError, match="out of range"):
        camlens.explain(model, x, ALL_METHODS, target_layer=layer, targets=10**6)
    assert_untouched(model, before)
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), f"{name} changed by a raising call"


def test_guard_costs_no_copy_in_eval_mode(monkeypatch):
    from camlens import guard

    copies = []
    real = guard._snapshot_buffers
    monkeypatch.setattr(guard, "_snapshot_buffers", lambda modules: copies.append(1) or real(modules))
    model = relu6_net().eval()
    camlens.explain(model, torch.rand(2, 3, 8, 8), ALL_METHODS)
    assert copies == []
    model[1].train()  # one training module is enough to snapshot
    before = snapshot(model)
    camlens.explain(model, torch.rand(2, 3, 8, 8), ALL_METHODS)
    assert copies == [1]
    assert_untouched(model, before)


# --------------------------------------------------------------------------------------------- threads
def _stress(model: nn.Module, inputs: list[torch.Tensor], threads: int = 4, calls: int = 20) -> None:
    expected = [camlens.explain(model, x, ALL_METHODS) for x in inputs]
    before = snapshot(model)
    start = threading.Barrier(threads)
    failures: list[str] = []

    def work(worker: int) -> None:
        start.wait()
        for call in range(calls):
            index = (worker + call) % len(inputs)
            try:
                result = camlens.explain(model, inputs[index], ALL_METHODS)
            except Exception as error:  # noqa: BLE001 - every failure is collected and reported
                failures.append(f"thread {worker} call {call}: {type(error).__name__}: {error}")
                continue
            for name in ALL_METHODS:
                if not torch.allclose(result[name], expected[index][name], rtol=1e-5, atol=1e-6):
                    failures.append(f"thread {worker} call {call}: {name} differs from the single-thread map")
            if result.target_layer != expected[index].target_layer:
                failures.append(f"thread {worker} call {call}: layer {result.target_layer}")

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not failures, f"{len(failures)} of {threads * calls} calls failed, e.g. {failures[:3]}"
    assert_untouched(model, before)


def test_concurrent_calls_on_one_model_equal_single_thread_results():
    torch.manual_seed(0)
    inputs = [torch.rand(2, 3, 32, 32) for _ in range(4)]
    _stress(tiny_resnet(), inputs)  # eval mode, automatic layer, all four methods


def test_concurrent_calls_in_train_mode_keep_buffers():
    torch.manual_seed(0)
    inputs = [torch.rand(3, 3, 12, 12) for _ in range(4)]
    model = relu6_net().train()  # batch statistics: no randomness, and every call writes the buffers
    _stress(model, inputs)


def test_repeated_calls_are_bit_identical():
    model = tiny_resnet()
    x = torch.rand(2, 3, 32, 32)
    first, second = (camlens.explain(model, x, ALL_METHODS) for _ in range(2))
    for name in ALL_METHODS:
        assert torch.equal(first[name], second[name]), name


# ---------------------------------------------------------------------------------- compiled, scripted
@pytest.mark.parametrize("method", ALL_METHODS)
def test_compiled_model_is_explained_as_its_eager_original(method):
    model = tiny_resnet()
    compiled = torch.compile(model)
    x = torch.rand(2, 3, 32, 32)
    eager = camlens.explain(model, x, [method], targets=[3, 4])
    before = snapshot(model)
    result = camlens.explain(compiled, x, [method], targets=[3, 4])
    assert result.compiled and not eager.compiled
    assert result.target_layer == eager.target_layer
    assert torch.equal(result[method], eager[method])
    assert_untouched(model, before)
    # layer names as the eager model has them, or as the wrapper shows them
    assert torch.equal(camlens.explain(compiled, x, [method], "_orig_mod.layer3", [3, 4])[method],
                       camlens.explain(model, x, [method], "layer3", [3, 4])[method])  # fmt: skip
    explainer = {"gradcam": camlens.GradCAM, "gradcam++": camlens.GradCAMPlusPlus}.get(method)
    if explainer is not None:
        assert torch.equal(explainer(compiled, "layer3")(x, [3, 4]), explainer(model, "layer3")(x, [3, 4]))


def test_compiled_submodule_or_in_place_compile_is_refused():
    model = tiny_resnet()
    model.layer4 = torch.compile(model.layer4)
    with pytest.raises(ValueError, match=r"submodule 'layer4' is compiled with torch.compile.*layer4._orig_mod"):
        camlens.explain(model, torch.rand(1, 3, 32, 32), ["gradcam"])
    model = tiny_resnet()
    model.compile()
    with pytest.raises(ValueError, match=r"compiled in place.*torch.compile\(model\)"):
        camlens.explain(model, torch.rand(1, 3, 32, 32), ["guided_backprop"])


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", ["script", "trace", "inside"])
@pytest.mark.parametrize("method", ["gradcam", "guided_backprop"])
def test_torchscript_is_refused_with_the_fix(kind, method):
    model = relu6_net().eval()
    x = torch.rand(2, 3, 8, 8)
    if kind == "script":
        model = torch.jit.script(model)
    elif kind == "trace":
        model = torch.jit.trace(model, x)
    else:
        model[3] = torch.jit.script(model[3])
    where = "submodule '3'" if kind == "inside" else "the model"
    with pytest.raises(ValueError, match=rf"{where} is a TorchScript module.*pass the original eager module"):
        camlens.explain(model, x, [method], target_layer=None if method.startswith("guided") else "4")
    with pytest.raises(ValueError, match="TorchScript"):
        camlens.capture(model, x, guided=True)


# ----------------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize(
    "targets",
    [
        torch.tensor(2.7),
        torch.tensor(2.0),
        2.7,
        2.0,
        float("nan"),
        torch.tensor(float("nan")),
        torch.tensor(True),
        torch.tensor([True, False]),
        np.float64(1.0),
        [1.0, 2.0],
        [1, True],
    ],
    ids=repr,
)
def test_non_integer_targets_are_refused_not_truncated(targets):
    model = relu6_net().eval()
    with pytest.raises(TypeError, match="target"):
        camlens.explain(model, torch.rand(2, 3, 8, 8), ["gradcam"], "4", targets)


@pytest.mark.parametrize(
    "targets", [torch.tensor(3), np.int64(3), [np.int64(3), 3], torch.tensor([3, 3], dtype=torch.int32)]
)
def test_integer_targets_of_any_integer_type(targets):
    model = relu6_net().eval()
    result = camlens.explain(model, torch.rand(2, 3, 8, 8), ["gradcam"], "4", targets)
    assert result.classes.tolist() == [3, 3]


# ------------------------------------------------------------------------------------------ huge images
_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from camlens.images import read_image

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    # torch's libraries map ~3 GiB of address space at import: the cap is counted from after the import
    budget = int(sys.argv[2])
    limit = status("VmSize") + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rgb = read_image(sys.argv[1])
    print(json.dumps([rgb.shape, str(rgb.dtype), rgb[10, 10].tolist(), rgb[-10, -10].tolist()]))
    """
)


@pytest.fixture(scope="module")
def huge_images(tmp_path_factory):
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("huge")
    image = Image.new("RGB", (10_000, 10_000), (40, 160, 40))
    ImageDraw.Draw(image).rectangle((5_000, 5_000, 10_000, 10_000), fill=(200, 30, 30))
    image.save(folder / "square.png", compress_level=1)
    wide = image.resize((10_000, 6_000), Image.Resampling.NEAREST)
    wide.save(folder / "wide.jpg", quality=90)
    del image, wide
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape"), [("square.png", (4096, 4096)), ("wide.jpg", (2458, 4096))])
def test_huge_image_decoded_at_the_size_needed_under_a_memory_cap(huge_images, name, shape):
    # full-size decoding of a 100-megapixel image takes ~1.7 GiB here; reduced decoding < 0.7 GiB
    budget = 1024**3
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(huge_images / name), str(budget)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(camlens.__file__).parents[1])},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    size, dtype, top_left, bottom_right = json.loads(child.stdout)
    assert tuple(size) == (*shape, 3) and dtype == "uint8"  # the aspect ratio kept, the longer side 4096
    assert np.abs(np.subtract(top_left, [40, 160, 40])).max() <= 8  # the picture in place, not cropped
    assert np.abs(np.subtract(bottom_right, [200, 30, 30])).max() <= 8


def test_max_side_none_keeps_the_full_size_and_bad_values_are_refused(tmp_path):
    from PIL import Image

    from camlens.images import read_image

    Image.new("RGB", (300, 100), "blue").save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png", max_side=None).shape == (100, 300, 3)
    assert read_image(tmp_path / "small.png", max_side=150).shape == (50, 150, 3)
    with pytest.raises(ValueError, match="max_side"):
        read_image(tmp_path / "small.png", max_side=0)
