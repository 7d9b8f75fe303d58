"""One picture per method on examples/cat.jpg with the bundled EfficientNet-Lite0: docs/methods/<method>.jpg.

    python examples/method_gallery.py             # every method (legrad needs a ViT: n/a here)
    python examples/method_gallery.py gradcam cam # only these

The noisy perturbation methods use fewer samples than their defaults (SS-CAM and IS-CAM 4) to keep
the run short on a CPU; everything else runs with its defaults.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import camlens
from camlens.images import read_image, to_batch
from camlens.viz import grid, jet, overlay, resize_maps
from camlens.zoo import load_network

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "methods"
SETTINGS = {"sscam": {"num_samples": 4}, "iscam": {"num_samples": 4}}


def main(names: list[str]) -> None:
    network = load_network()
    image = read_image(ROOT / "examples" / "cat.jpg")
    x = to_batch([image], network.input_size, network.mean, network.std)
    size = (image.shape[0], image.shape[1])
    OUT.mkdir(parents=True, exist_ok=True)
    cells = []
    for name in names:
        if name == "legrad":
            cells.append(None)
            continue
        start = time.perf_counter()
        result = camlens.explain(network.model, x, [name], **SETTINGS.get(name, {}))
        seconds = time.perf_counter() - start
        heat = resize_maps(result[name], size)[0]
        if heat.dim() == 3:  # guided maps: show the gradient image
            from camlens.viz import gradient_image

            picture = gradient_image(heat.permute(1, 2, 0).numpy())
        else:
            picture = overlay(image, jet(heat.numpy()))
        Image.fromarray(picture).save(OUT / f"{name}.jpg", quality=88)
        cells.append(picture)
        print(f"{name}: {seconds:.1f}s, class {network.label(int(result.classes[0]))}", flush=True)
    for name in camlens.available_methods():
        if name not in names and (OUT / f"{name}.jpg").exists():
            names.append(name)
            cells.append(np.asarray(Image.open(OUT / f"{name}.jpg")))
    order = camlens.available_methods()
    pairs = sorted(zip(names, cells, strict=True), key=lambda p: order.index(p[0]))
    rows = [(name, [cell]) for name, cell in pairs]
    columns = 6
    table: list[tuple[str, list[np.ndarray | None]]] = []
    for i in range(0, len(rows), columns):
        chunk = rows[i : i + columns]
        table.append((" / ".join(n for n, _ in chunk), [c[0] for _, c in chunk]))
    grid(table, [""] * columns, cell=150).save(OUT / "gallery.jpg", quality=85)


if __name__ == "__main__":
    main(sys.argv[1:] or camlens.available_methods())
