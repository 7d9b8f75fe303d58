"""``camlens methods``: the built-in method names, their family, whether they read a target layer, and their
title. No torch import: the table is plain constants (a test keeps it equal to the registry)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from camlens.cli import common

# name -> (family, uses a target layer, title); the order and the names are camlens.names.METHODS
TABLE: dict[str, tuple[str, bool, str]] = {
    "gradcam": ("gradient CAM", True, "Grad-CAM (Selvaraju et al. 2017)"),
    "gradcam++": ("gradient CAM", True, "Grad-CAM++ (Chattopadhay et al. 2018)"),
    "xgradcam": ("gradient CAM", True, "XGrad-CAM (Fu et al. 2020)"),
    "layercam": ("gradient CAM", True, "LayerCAM (Jiang et al. 2021)"),
    "hirescam": ("gradient CAM", True, "HiResCAM (Draelos & Carin 2020)"),
    "gradcam_elementwise": ("gradient CAM", True, "element-wise Grad-CAM"),
    "fem": ("activation CAM", True, "FEM (Fuad et al. 2020), gradient-free"),
    "eigencam": ("activation CAM", True, "Eigen-CAM (Muhammad & Yeasin 2020)"),
    "eigengradcam": ("gradient CAM", True, "Eigen-Grad-CAM"),
    "kpcacam": ("activation CAM", True, "KPCA-CAM (kernel PCA of the activations)"),
    "refinecam": ("gradient CAM", True, "Refine-CAM (Domeniconi et al. 2026)"),
    "fullgrad": ("whole graph", False, "FullGrad (Srinivas & Fleuret 2019)"),
    "cam": ("classifier CAM", True, "CAM (Zhou et al. 2016), GAP + linear heads"),
    "finercam": ("gradient CAM", True, "Finer-CAM (Zhang et al. 2025)"),
    "shapleycam": ("gradient CAM", True, "ShapleyCAM (Cai 2024)"),
    "legrad": ("whole graph", False, "LeGrad (Bousselham et al. 2024), vision transformers only"),
    "ablationcam": ("perturbation CAM", True, "Ablation-CAM (Desai & Ramaswamy 2020)"),
    "scorecam": ("perturbation CAM", True, "Score-CAM (Wang et al. 2020)"),
    "sscam": ("perturbation CAM", True, "SS-CAM (smoothed Score-CAM)"),
    "iscam": ("perturbation CAM", True, "IS-CAM (integrated Score-CAM)"),
    "smoothgradcam++": ("smoothed CAM", True, "Smooth Grad-CAM++ (Omeiza et al. 2019)"),
    "sess": ("smoothed CAM", True, "SESS (Tyagi et al. 2022), scales and windows"),
    "guided_backprop": ("pixel gradient", False, "guided backpropagation (Springenberg et al. 2015)"),
    "guided_gradcam": ("pixel gradient x CAM", True, "Guided Grad-CAM (Selvaraju et al. 2017)"),
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "methods",
        help="list the explanation methods (names for --methods)",
        description="Every built-in method name that --methods accepts, with its family, whether it reads a "
        "target layer (--layer-name), and what it is. 'all' runs every one but legrad "
        "(vision transformers only: name it).",
        formatter_class=common.HelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    parser.set_defaults(handler=main)
    return parser


def rows() -> list[dict[str, Any]]:
    from camlens.names import METHODS, SEED_METHODS

    return [
        {
            "name": name,
            "family": TABLE[name][0],
            "uses_layer": TABLE[name][1],
            "title": TABLE[name][2],
            "default": name in SEED_METHODS,
        }
        for name in METHODS
    ]


def main(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'name':<20s} {'family':<21s} {'layer':<6s} title")
    for row in table:
        mark = " (default)" if row["default"] else ""
        print(
            f"{row['name']:<20s} {row['family']:<21s} {'yes' if row['uses_layer'] else 'no':<6s} {row['title']}{mark}"
        )
    print(
        f"{len(table)} methods; the default runs the four marked; '--methods all' runs every one but legrad (name it)"
    )
    return 0
