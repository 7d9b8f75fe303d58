"""Train the tiny ViT of camlens.synthetic on the coloured-patch task and save its maps side by side.

    python examples/synthetic_vit.py            # writes docs/synthetic_vit_gradcam.png

Each column: the image with the evidence patch boxed in white; below it, on the same image, Grad-CAM at
the automatic layer (the last block's norm1, tokens laid out on the 8 x 8 patch grid), the four attention
methods (attention rollout, generic attention, transformer attribution, AttnLRP) and ``auto``'s choice,
each map with its peak marked, all from one ``camlens.explain`` call. Each row's label gives the share of
the 200 test images whose peak lies in the patch (training seed 0; the mean over 10 seeds is in
docs/evaluation/synthetic_meaning.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import camlens  # noqa: E402
from camlens.synthetic import TinyViT, patch_dataset, peak_in_box_rate, train  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "synthetic_vit_gradcam.png"
METHODS = ["gradcam", "attention_rollout", "generic_attention", "transformer_attribution", "attnlrp", "auto"]


def main() -> None:
    torch.manual_seed(0)
    model = TinyViT()
    accuracy = train(model, patch_dataset(1500, seed=0), steps=250)
    test = patch_dataset(200, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Grad-CAM's zero-everywhere notes: the rates say it
        result = camlens.explain(model, test.images, METHODS)
    rates = {m: peak_in_box_rate(result[m], test.boxes) for m in METHODS}
    print(f"accuracy {accuracy:.3f}; layer {result.target_layer}; auto -> {result.auto_method}; peak in patch:")
    print("  " + ", ".join(f"{m} {rate:.1%}" for m, rate in rates.items()))
    titles = {m: m.replace("_", "\n", 1) for m in METHODS}
    titles["gradcam"] = f"gradcam\n{result.target_layer}"
    titles["auto"] = f"auto =\n{result.auto_method}"
    shown = 6
    rows = 1 + len(METHODS)
    fig, axes = plt.subplots(rows, shown, figsize=(1.3 * shown + 1.2, 1.3 * rows + 0.5), squeeze=False)
    for i in range(shown):
        top, left, bottom, right = test.boxes[i].tolist()
        pictures = [("", test.images[i].permute(1, 2, 0))] + [(m, result[m][i]) for m in METHODS]
        for row, (method, picture) in enumerate(pictures):
            ax = axes[row, i]
            ax.imshow(picture, cmap=None if row == 0 else "jet", vmin=0, vmax=1)
            ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, color="w"))
            if row > 0:
                peak = int(picture.argmax())
                ax.plot(peak % picture.shape[1], peak // picture.shape[1], "w+", markersize=12)
                if i == 0:
                    ax.set_ylabel(f"{titles[method]}\n{rates[method]:.0%} in patch", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("image\n(patch boxed)", fontsize=8)
    fig.suptitle("tiny ViT, seed 0: 6 of 200 test images; share of the 200 with the peak in the patch", fontsize=9)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
