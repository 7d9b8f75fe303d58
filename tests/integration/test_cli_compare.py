"""camlens compare: the seeds' comparison table as PNG, self-contained HTML and Markdown."""

from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image

from helpers import EXAMPLES


@pytest.mark.slow
def test_compare_table_with_available_and_unavailable_networks(run, tmp_path):
    # resnet18 gets (random) weights through the local torch cache; vgg16 and the timm resnet10t have none:
    # shown as unavailable, not fatal
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / url.rsplit("/", 1)[1])
    out = tmp_path / "out"
    result = run(
        "compare",
        str(EXAMPLES / "two_cats.jpg"),
        "--networks",
        "efficientnet_lite0,resnet18,vgg16,resnet10t",
        "--output-dir",
        str(out),
        env={"TORCH_HOME": str(tmp_path / "torch-home")},
    )
    assert result.returncode == 0, result.stderr
    png = Image.open(out / "two_cats-compare.png")
    assert png.height > 3 * 150 and png.width > 7 * 150
    html = (out / "two_cats-compare.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 4 + 2 * 6  # an original per row, six pictures per available row
    assert 'src="http' not in html and 'src="two_cats' not in html  # self-contained
    assert "no weights for vgg16" in html and "no weights for timm model resnet10t" in html
    md = (out / "two_cats-compare.md").read_text().splitlines()
    assert len(md) == 2 + 4
    assert md[2].startswith("| efficientnet_lite0 |") and "cat" in md[2]
    assert "n/a" in md[4] and "vgg16" in md[4]
    for suffix in ("heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"):
        assert (out / f"two_cats-resnet18-{suffix}.jpg").is_file()
    assert "layer layer4" in result.stdout and "time: models" in result.stdout


@pytest.mark.slow
def test_compare_unknown_network_is_fatal_with_suggestion(run, tmp_path):
    out = tmp_path / "out"
    result = run(
        "compare", str(EXAMPLES / "cat.jpg"), "--networks", "efficientnet_lite0,densenet12", "--output-dir", str(out)
    )
    assert result.returncode == 2 and "densenet121" in result.stderr and not out.exists()


@pytest.mark.slow
def test_compare_and_explain_with_metrics_agree_with_the_metric_functions(run, tmp_path):
    """``--metrics`` adds per-method metric columns; their values are camlens.metrics' on the same input."""
    import csv

    import camlens
    from camlens.images import read_image, to_batch
    from camlens.metrics import average_drop, deletion, saliency_2d
    from camlens.zoo import load_network

    image = EXAMPLES / "cat.jpg"
    network = load_network("efficientnet_lite0")
    x = to_batch([read_image(image)], network.input_size, network.mean, network.std)
    maps = saliency_2d(camlens.explain(network.model, x, ["gradcam"])["gradcam"])
    expected = {
        "gradcam/deletion": float(deletion(network.model, x, maps, steps=5).values[0]),
        "gradcam/average_drop": float(average_drop(network.model, x, maps).values[0]),
    }
    common = ["--methods", "gradcam", "--metrics", "deletion", "average_drop", "--metric-steps", "5"]
    out = tmp_path / "compare"
    result = run("compare", str(image), "--networks", "efficientnet_lite0", "--output-dir", str(out), *common)
    assert result.returncode == 0, result.stderr
    md = (out / "cat-compare.md").read_text().splitlines()
    assert md[0].endswith("| gradcam/deletion (lower better) | gradcam/average_drop (lower better) |")
    cells = [c.strip() for c in md[2].strip("|").split("|")]
    assert float(cells[-2]) == pytest.approx(expected["gradcam/deletion"], abs=2e-3)
    assert float(cells[-1]) == pytest.approx(expected["gradcam/average_drop"], abs=2e-3)
    assert "gradcam/deletion" in result.stdout

    out = tmp_path / "explain"
    result = run("explain", str(image), "--output-dir", str(out), *common)
    assert result.returncode == 0, result.stderr
    row = next(csv.DictReader((out / "results.csv").open()))
    for key, value in expected.items():
        assert float(row[f"metric_{key}"]) == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_metrics_that_need_boxes_or_do_not_exist_are_usage_errors(run, tmp_path):
    for metric, message in (("pointing_game", "needs object boxes"), ("delection", "closest: deletion")):
        out = tmp_path / metric
        result = run("compare", str(EXAMPLES / "cat.jpg"), "--networks", "efficientnet_lite0", "--metrics", metric,
                     "--output-dir", str(out))  # fmt: skip
        assert result.returncode == 2 and message in result.stderr and not out.exists()
