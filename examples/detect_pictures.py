"""The README's picture of the tiny detector's per-box maps, made by the command line itself.

    python examples/detect_pictures.py     # writes docs/tasks/tiny_detector.png

It writes an example scene of three squares (examples/three_squares.png, camlens.synthetic.square_scenes), runs

    camlens detect examples/three_squares.png --model examples/tiny_tasks.py:detector \
        --labels examples/square_labels.txt --methods gradcam odam drise --format png

into a temporary folder, and lays out what that command wrote: a row per method, the picture with every box
first, then each box's map (enlarged 6x, nearest neighbour: the scene is 48 x 48), captioned with the class and
score from boxes.csv and the share of the map's mass inside the box (the measure of
tests/reference/test_detection_meaning.py, computed from the maps the command saved with --save-maps).
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from camlens.cli.main import main as camlens  # noqa: E402
from camlens.run import load_maps  # noqa: E402
from camlens.synthetic import square_scenes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OUT = ROOT / "docs" / "tasks"
METHODS = {"gradcam": "Grad-CAM", "odam": "ODAM", "drise": "D-RISE"}
NET = "tiny_tasks-detector"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _inside(cam: np.ndarray, row: dict[str, str]) -> float:
    x1, y1, x2, y2 = (round(float(row[c])) for c in ("x1", "y1", "x2", "y2"))
    return float(cam[max(y1, 0) : y2, max(x1, 0) : x2].sum() / max(cam.sum(), 1e-12))


def main() -> int:
    images, _ = square_scenes(1, torch.Generator().manual_seed(3))
    scene = EXAMPLES / "three_squares.png"
    rgb = (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(rgb)).save(scene)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "detect"
        code = camlens(["detect", str(scene), "--model", f"{EXAMPLES}/tiny_tasks.py:detector",
                        "--labels", str(EXAMPLES / "square_labels.txt"), "--methods", *METHODS, "--format", "png",
                        "--save-maps", "--output-dir", str(out)])  # fmt: skip
        if code:
            return code
        rows = _rows(out / "boxes.csv")
        maps = load_maps(out / f"three_squares-{NET}-maps.npz")["three_squares"]
        boxes = Image.open(out / f"three_squares-{NET}-boxes.png").convert("RGB")
        fig, axes = plt.subplots(len(METHODS), 1 + len(rows), figsize=(2.3 * (1 + len(rows)), 2.5 * len(METHODS)))
        for r, (method, title) in enumerate(METHODS.items()):
            axes[r, 0].imshow(np.asarray(boxes), interpolation="nearest")
            axes[r, 0].set_title("every box" if r == 0 else "", fontsize=9)
            for j, row in enumerate(rows):
                picture = Image.open(out / f"three_squares-{NET}-box{row['box']}-{method}.png").convert("RGB")
                share = _inside(np.asarray(maps[f"box{row['box']}/{method}"]), row)
                axes[r, j + 1].imshow(np.asarray(picture), interpolation="nearest")
                axes[r, j + 1].set_title(f"{title}, box {row['box']} ({row['class_name']})\n"
                                         f"{share:.0%} of the map in its box", fontsize=8)  # fmt: skip
        for ax in axes.flat:
            ax.axis("off")
        fig.tight_layout()
        OUT.mkdir(parents=True, exist_ok=True)
        fig.savefig(OUT / "tiny_detector.png", dpi=110)
        plt.close(fig)
        print(f"wrote {(OUT / 'tiny_detector.png').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
