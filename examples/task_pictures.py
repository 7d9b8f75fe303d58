"""The README's pictures of the tiny segmenter and the tiny CLIP, made by the command line itself.

    python examples/task_pictures.py     # writes docs/tasks/tiny_segmenter.png and docs/tasks/tiny_clip.png

It writes the two example scenes (examples/marker_scene.png, examples/two_squares.png), runs

    camlens segment examples/marker_scene.png --model examples/tiny_tasks.py:segmenter ...
    camlens explain examples/two_squares.png --model examples/tiny_tasks.py:clip --text red blue ...

into a temporary folder, and lays the pictures those commands wrote side by side (enlarged 8x, nearest
neighbour: the scenes are 32 x 32), captioned with the numbers the commands printed in their tables.
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
from PIL import Image  # noqa: E402

from camlens.cli.main import main as camlens  # noqa: E402
from camlens.synthetic import marker_scenes, two_patches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OUT = ROOT / "docs" / "tasks"
RAW = ["--input-size", "32", "--mean", "0", "0", "0", "--std", "1", "1", "1", "--format", "png"]


def _save(image, path: Path) -> None:
    rgb = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _panel(pictures: list[tuple[Path, str]], target: Path) -> None:
    fig, axes = plt.subplots(1, len(pictures), figsize=(2.4 * len(pictures), 2.9))
    for ax, (path, title) in zip(axes, pictures, strict=True):
        ax.imshow(np.asarray(Image.open(path).convert("RGB")), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> int:
    scenes, _, _ = marker_scenes(1, seed=11)
    _save(scenes[0], EXAMPLES / "marker_scene.png")
    images, captions, _, _ = two_patches(1, seed=7)
    _save(images[0], EXAMPLES / "two_squares.png")
    with tempfile.TemporaryDirectory() as tmp:
        seg, clip = Path(tmp) / "segment", Path(tmp) / "clip"
        code = camlens(["segment", str(EXAMPLES / "marker_scene.png"), "--model", f"{EXAMPLES}/tiny_tasks.py:segmenter",
                        "--labels", str(EXAMPLES / "marker_labels.txt"), "--methods", "gradcam",
                        "--output-dir", str(seg), *RAW])  # fmt: skip
        code = code or camlens(["explain", str(EXAMPLES / "two_squares.png"), "--model",
                                f"{EXAMPLES}/tiny_tasks.py:clip", "--text", "red", "blue", "--methods", "gradcam",
                                "--output-dir", str(clip), *RAW])  # fmt: skip
        if code:
            return code
        pictures = [(EXAMPLES / "marker_scene.png", "image"), (next(seg.glob("*-mask.png")), "predicted mask")]
        for row in _rows(seg / "classes.csv"):
            share = float(row["pixel_share"])
            pictures.append((seg / row["files"], f"Grad-CAM, class {row['class_name']}\n({share:.0%} of the pixels)"))
        _panel(pictures, OUT / "tiny_segmenter.png")
        pictures = [(EXAMPLES / "two_squares.png", f'image\n"{captions[0]}"')]
        for row in _rows(clip / "prompts.csv"):
            caption = f"Grad-CAM, prompt \"{row['prompt']}\"\n(cosine {float(row['similarity']):.3f})"
            pictures.append((clip / row["files"], caption))
        _panel(pictures, OUT / "tiny_clip.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
