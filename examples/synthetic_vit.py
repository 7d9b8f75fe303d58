"""Train the tiny ViT of camlens.synthetic on the coloured-patch task and save Grad-CAM pictures.

    python examples/synthetic_vit.py            # writes docs/synthetic_vit_gradcam.png

Each column: the image with the evidence patch boxed in white, and the Grad-CAM map at the automatic
layer (the last block's norm1, tokens laid out on the 8 x 8 patch grid) with its peak marked.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import camlens  # noqa: E402
from camlens.synthetic import TinyViT, patch_dataset, peak_in_box_rate, train  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "synthetic_vit_gradcam.png"


def main() -> None:
    torch.manual_seed(0)
    model = TinyViT()
    accuracy = train(model, patch_dataset(1500, seed=0), steps=250)
    test = patch_dataset(200, seed=1)
    result = camlens.explain(model, test.images, ["gradcam"])
    rate = peak_in_box_rate(result["gradcam"], test.boxes)
    print(f"accuracy {accuracy:.3f}; layer {result.target_layer}; {result.layout.describe()}; peak in patch {rate:.1%}")
    shown = 6
    fig, axes = plt.subplots(2, shown, figsize=(2 * shown, 4.2))
    for i in range(shown):
        top, left, bottom, right = test.boxes[i].tolist()
        cam = result["gradcam"][i]
        peak = int(cam.argmax())
        for row, picture in enumerate((test.images[i].permute(1, 2, 0), cam)):
            ax = axes[row, i]
            ax.imshow(picture, cmap=None if row == 0 else "jet", vmin=0, vmax=1)
            ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, color="w"))
            if row == 1:
                ax.plot(peak % cam.shape[1], peak // cam.shape[1], "w+", markersize=12)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"tiny ViT, Grad-CAM at {result.target_layer} (automatic); peak in the patch: {rate:.0%} of 200")
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
