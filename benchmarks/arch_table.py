"""The table "family -> default layer -> layout" for docs, generated from the test sweep's architectures.

python benchmarks/arch_table.py > table.md
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

import camlens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sweep_archs import SWEEP, build_sweep  # noqa: E402

warnings.filterwarnings("ignore")


def main() -> None:
    print("| family | model (random weights) | input | automatic layer | layout | guided rule |")
    print("| --- | --- | --- | --- | --- | --- |")
    for family, source, name, kwargs, size in SWEEP:
        model = build_sweep(source, name, kwargs)
        height, width = size if isinstance(size, tuple) else (size, size)
        result = camlens.explain(model, torch.rand(1, 3, height, width), ["gradcam", "guided_backprop"])
        rule = ", ".join(f"{k} x{n}" for k, n in sorted((result.guided_rule or {}).items()))
        print(
            f"| {family} | {source} `{name}` | {height} x {width} | `{result.target_layer}` | "
            f"{result.layout.describe()} | {rule} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
