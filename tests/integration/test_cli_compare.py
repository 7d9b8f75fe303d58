"""camlens compare: the seeds' comparison table as PNG, self-contained HTML and Markdown."""

from __future__ import annotations

import torch
import torchvision
from PIL import Image

from helpers import EXAMPLES


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


def test_compare_unknown_network_is_fatal_with_suggestion(run, tmp_path):
    out = tmp_path / "out"
    result = run(
        "compare", str(EXAMPLES / "cat.jpg"), "--networks", "efficientnet_lite0,densenet12", "--output-dir", str(out)
    )
    assert result.returncode == 2 and "densenet121" in result.stderr and not out.exists()
