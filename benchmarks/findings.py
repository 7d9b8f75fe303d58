"""Reproduce two published findings with camlens.metrics on the bundled EfficientNet-Lite0 and real photos.

    python benchmarks/findings.py            # writes docs/evaluation/*.md and *.png

1. Adebayo et al. 2018: under cascading randomisation (classifier first, then conv_head, blocks.6 ...
   conv_stem), Grad-CAM's map changes while guided backprop's and Guided Grad-CAM's barely do.
2. Chattopadhyay et al. 2018 (Grad-CAM++): on an image with several instances of the class
   (examples/two_cats.jpg: chelsea next to its mirror image), Grad-CAM++ spreads its mass over the
   instances more evenly than Grad-CAM. Hand-made boxes for the two cats.
3. A methods x metrics table (mean and 95% CI over the photos) with the deletion/insertion curves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import camlens
import camlens.metrics as cm
from camlens.images import read_image, to_batch
from camlens.zoo import load_network

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "evaluation"
METHODS = ["gradcam", "gradcam++", "guided_backprop", "guided_gradcam"]
# the two cats in the 224 x 224 input (the whole 902 x 300 photo resized, no crop): x0, y0, x1, y1
TWO_CAT_BOXES = [(0, 0, 100, 224), (124, 0, 224, 224)]


def photos() -> tuple[list[str], list[np.ndarray]]:
    import skimage.data

    names = ["chelsea (skimage)", "cat.jpg", "cat_and_cup.jpg"]
    images = [
        skimage.data.chelsea(),
        read_image(ROOT / "examples/cat.jpg"),
        read_image(ROOT / "examples/cat_and_cup.jpg"),
    ]
    return names, images


def sanity(net, x: torch.Tensor) -> dict:
    layers = ["classifier", "conv_head", *[f"blocks.{i}" for i in range(6, -1, -1)], "conv_stem"]
    methods = ["gradcam", "guided_backprop", "guided_gradcam"]
    rows = cm.sanity_check(net.model, x, methods, mode="cascading", layers=layers, keep_maps=True)
    table = ["| randomised down to | " + " | ".join(f"{m} Spearman abs / SSIM" for m in methods) + " |"]
    table.append("|---|" + "---|" * len(methods))
    summary = {}
    for layer in layers:
        cells = []
        for method in methods:
            sel = [r for r in rows if r["layer"] == layer and r["method"] == method]
            rho = float(np.mean([r["spearman_abs"] for r in sel]))
            s = float(np.mean([r["ssim"] for r in sel]))
            h = float(np.mean([r["hog"] for r in sel]))
            summary[f"{layer}/{method}"] = {
                "spearman_abs": rho,
                "ssim": s,
                "hog": h,
                "spearman": float(np.mean([r["spearman"] for r in sel])),
            }
            cells.append(f"{rho:.2f} / {s:.2f}")
        table.append(f"| {layer} | " + " | ".join(cells) + " |")
    (OUT / "sanity_cascading.md").write_text(
        "Cascading randomisation of EfficientNet-Lite0 (bundled ImageNet weights), mean over "
        f"{x.shape[0]} photos, fixed original class. Spearman rank correlation of |map| and SSIM with "
        "the trained model's map (1 = unchanged).\n\n" + "\n".join(table) + "\n"
    )
    fig = cm.plot_sanity(rows.maps, image=0)
    fig.savefig(OUT / "sanity_panel.png", dpi=110)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for method in methods:
        ax.plot(range(len(layers)), [summary[f"{layer}/{method}"]["spearman_abs"] for layer in layers], marker="o",
                label=method)  # fmt: skip
    ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("Spearman |map| vs trained")
    ax.set_ylim(-0.2, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "sanity_curves.png", dpi=110)
    return summary


def two_cats(net) -> dict:
    x = to_batch([read_image(ROOT / "examples/two_cats.jpg")], net.input_size, net.mean, net.std)
    result = camlens.explain(net.model, x, ["gradcam", "gradcam++"])
    size = tuple(x.shape[-2:])
    left = cm.boxes_to_masks([[TWO_CAT_BOXES[0]]], size)
    right = cm.boxes_to_masks([[TWO_CAT_BOXES[1]]], size)
    both = left | right
    out = {"class": net.labels[int(result.classes[0])] if net.labels else int(result.classes[0])}
    lines = ["| method | energy in both boxes | mass on left cat | mass on right cat | min/max of the two |",
             "|---|---|---|---|---|"]  # fmt: skip
    for method in ("gradcam", "gradcam++"):
        maps = result[method]
        e_both = cm.energy_pointing_game(maps, both).values.item()
        e_left = cm.energy_pointing_game(maps, left).values.item()
        e_right = cm.energy_pointing_game(maps, right).values.item()
        balance = min(e_left, e_right) / max(e_left, e_right)
        out[method] = {"both": e_both, "left": e_left, "right": e_right, "balance": balance}
        lines.append(f"| {method} | {e_both:.3f} | {e_left:.3f} | {e_right:.3f} | {balance:.3f} |")
    (OUT / "two_cats.md").write_text(
        f"examples/two_cats.jpg (chelsea and its mirror image), class explained: {out['class']}. "
        f"Boxes in the 224 x 224 input: left {TWO_CAT_BOXES[0]}, right {TWO_CAT_BOXES[1]}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, method in zip(axes, ("gradcam", "gradcam++"), strict=True):
        ax.imshow(result[method][0].numpy(), cmap="jet", vmin=0, vmax=1)
        for x0, y0, x1, y1 in TWO_CAT_BOXES:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white", lw=1.5))
        ax.set_title(f"{method}: balance {out[method]['balance']:.2f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(OUT / "two_cats.png", dpi=110)
    return out


def table(net, x: torch.Tensor, names: list[str]) -> dict:
    metrics = ["deletion", "insertion", "average_drop", "increase_in_confidence", "sparseness", "complexity"]
    steps = 20  # RISE-style fixed steps; 20 keeps the run short on a CPU
    options = {"deletion": {"steps": steps}, "insertion": {"steps": steps}}
    rows = cm.evaluate(net.model, x, METHODS, metrics, options=options, keep_results=True)
    summary = cm.summarise(rows)
    (OUT / "metrics_table.md").write_text(
        f"EfficientNet-Lite0 (bundled weights) on {len(names)} photos ({', '.join(names)}): mean [95% CI] "
        f"over the photos. Deletion to zeros, insertion from RISE's blur, {steps} steps, softmax probability.\n\n"
        + cm.to_markdown(summary)
        + "\n"
    )
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("deletion", "insertion"), strict=True):
        results = {r["method"]: r["result"] for r in rows if r["metric"] == metric and r["image"] == 0}
        cm.plot_curves(results, title=f"{metric} (mean over {len(names)} photos)", ax=ax)
    fig.savefig(OUT / "deletion_insertion.png", dpi=110)
    return {f"{r['method']}/{r['metric']}": r["mean"] for r in summary}


def main() -> None:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    net = load_network()
    names, images = photos()
    x = to_batch(images, net.input_size, net.mean, net.std)
    parts = sys.argv[1:] or ["two_cats", "table", "sanity"]
    record: dict = {}
    if "two_cats" in parts:
        record["two_cats"] = two_cats(net)
        print(json.dumps(record["two_cats"], indent=1), flush=True)
    if "table" in parts:
        record["table"] = table(net, x, names)
        print((OUT / "metrics_table.md").read_text(), flush=True)
    if "sanity" in parts:
        record["sanity"] = sanity(net, x)
        print((OUT / "sanity_cascading.md").read_text(), flush=True)
    path = OUT / "findings.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(record)
    path.write_text(json.dumps(old, indent=1))


if __name__ == "__main__":
    main()
