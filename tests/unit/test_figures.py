"""Figures for papers: the methods x images grid, the compare figure, annotated pictures that tile."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.render import pictures
from camlens.zoo import Network

pytest.importorskip("matplotlib")

LABELS = ["zebra", "Egyptian cat", "tabby", "espresso"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def _images(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


def _colorbars(fig) -> list:
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def _cell_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images and getattr(ax, "_colorbar", None) is None]


def test_figure_grid_rows_are_images_x_classes_one_colour_bar_and_three_formats(tmp_path):
    from camlens.viz.grid import save_figure

    model, images = _model(), _images(2)
    net = Network("tinynet", model, (32, 32), labels=LABELS)
    x = net.preprocess(images)
    methods = ["gradcam", "gradcam++", "guided_backprop", "guided_gradcam"]
    cat = camlens.explain(model, x, methods, target_layer="2", targets=1)
    cup = camlens.explain(model, x, methods, target_layer="2", targets=3)
    fig = camlens.figure_grid([cat, cup], images, network=net, names=["left", "right"])
    assert len(_colorbars(fig)) == 1
    cells = _cell_axes(fig)
    assert len(cells) == 2 * 2 * 4  # (images x classes) x methods
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    joined = "\n".join(texts)
    for needed in ("tinynet", "target layer: 2", "Egyptian cat (1)", "espresso (3)", "left", "right", "Grad-CAM++"):
        assert needed in joined, needed
    assert all(not ax.texts and not ax.get_ylabel() for ax in cells)  # the cells carry no text
    files = save_figure(fig, tmp_path / "grid")
    assert [f.name for f in files] == ["grid.png", "grid.svg", "grid.pdf"]
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "grid.pdf").read_bytes()[:5] == b"%PDF-"
    root = ET.parse(tmp_path / "grid.svg").getroot()
    groups = [e for e in root.iter() if e.get("id", "").startswith("camlens-cell-")]
    assert len(groups) == 16 and all(g.tag == "{http://www.w3.org/2000/svg}image" for g in groups)
    # the Explanation's convenience is the same figure
    again = cat.figure(images, ["gradcam"], labels=LABELS, network="tinynet")
    assert len(_cell_axes(again)) == 2 and len(_colorbars(again)) == 1


def test_compare_figure_has_captions_per_row_and_column_only_and_one_colour_bar(tmp_path):
    from camlens.errors import UsageError
    from camlens.report import compare_figure
    from camlens.run import RunOptions, compare

    path = tmp_path / "cats.png"
    from PIL import Image

    Image.fromarray(_images(1)[0]).save(path)

    def load(name: str) -> Network:
        if name == "missing":
            raise UsageError("no weights for missing")
        return Network(name, _model(), (32, 32), labels=LABELS)

    summary = compare(["tiny_a", "missing", "tiny_b"], [path], tmp_path / "out", load,
                      RunOptions(annotate=True, methods=("gradcam", "guided_backprop")))  # fmt: skip
    fig = compare_figure(summary.tables[0])
    assert len(_colorbars(fig)) == 1
    cells = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is None and ax.axison]
    assert len(cells) == 3 * 4  # image, Grad-CAM heatmap, Grad-CAM, guided backprop per network
    top = cells[:4]
    assert [ax.get_title() for ax in top] == ["image", "Grad-CAM heatmap", "Grad-CAM", "guided backprop"]
    assert all(not ax.texts and not ax.get_ylabel() and not ax.get_xlabel() for ax in cells)
    assert all(not ax.get_title() for ax in cells[4:])
    labels = "\n".join(t.get_text() for ax in fig.axes if not ax.axison for t in ax.texts)
    assert "tiny_a" in labels and "tiny_b" in labels and "unavailable: no weights for\nmissing" in labels
    # the plain pictures are the cells (annotated ones have a caption bar: taller than the image)
    row = summary.tables[0].rows[0]
    assert row.plain["cam"].shape == summary.tables[0].rgb.shape
    assert row.pictures["cam"].shape[0] > summary.tables[0].rgb.shape[0]
    assert (tmp_path / "out" / "cats-compare.png").read_bytes()[:4] == b"\x89PNG"


def test_annotated_pictures_of_one_image_have_one_frame_size():
    rgb = _images(1)[0]
    rng = torch.Generator().manual_seed(0)
    cam = torch.rand(24, 32, generator=rng)
    gradient = torch.randn(3, 24, 32, generator=rng)
    maps = {"gradcam": cam, "gradcam++": cam.flip(0), "guided_backprop": gradient, "guided_gradcam": gradient * cam}
    out = pictures(rgb, maps, "Egyptian cat 0.83")
    assert sorted(out) == sorted(["heatmap", "cam", "heatmap++", "cam++", "gb", "cam_gb"])
    sizes = {suffix: picture.shape for suffix, picture in out.items()}
    assert len(set(sizes.values())) == 1, sizes
    # the picture itself sits at the same place in every frame (below a title bar of the same height)
    from camlens.viz import gradient_image, jet

    top = 20  # the title bar of a 32-pixel-wide picture: the smallest font (10) + 10
    assert np.array_equal(out["heatmap"][top : top + 24], jet(cam.numpy()))
    assert np.array_equal(out["gb"][top : top + 24], gradient_image(gradient.permute(1, 2, 0).numpy()))


def test_rows_of_wide_pictures_are_as_tall_as_the_pictures_not_square() -> None:
    """A 4:1 photo gave rows as tall as square cells: large blank gaps between the rows of the compare figure."""
    from camlens.viz.grid import figure

    wide = np.zeros((50, 200, 3), dtype=np.uint8)
    square = np.zeros((100, 100, 3), dtype=np.uint8)
    fig_wide = figure([[wide, wide], [wide, wide]], ["a", "b"], ["m1", "m2"])
    fig_square = figure([[square, square], [square, square]], ["a", "b"], ["m1", "m2"])
    width, height = fig_wide.get_size_inches()
    assert height < 0.6 * fig_square.get_size_inches()[1]
    assert width == fig_square.get_size_inches()[0]
