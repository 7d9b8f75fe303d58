"""Speed of the CAM family, side by side in one run (CPU): ratios of medians, round-robin timing.

    python benchmarks/methods.py            # rounds=3
    python benchmarks/methods.py --quick    # rounds=1, 96 x 96 inputs (smoke test)

1. one ``explain`` of every gradient/activation method together vs one Grad-CAM call (resnet50, batch 8);
2. Ablation-CAM (resnet18, batch 1) vs pytorch-grad-cam's ``AblationCAM``, same batch size, same map;
3. Score-CAM (resnet18, batch 1) vs pytorch-grad-cam's and torchcam's ``ScoreCAM``, same batch size;
4. peak memory (VmHWM of a fresh process) of Ablation-CAM and Score-CAM against ``batch_size``.

Results: a table on stdout and ``bench-results/methods.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision

import camlens

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import round_robin  # noqa: E402

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
GRADIENT_METHODS = [
    "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "fem", "eigencam",
    "eigengradcam", "kpcacam", "refinecam", "cam", "finercam", "shapleycam",
]  # fmt: skip


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double().flatten(), b.double().flatten()]))[0, 1])


def calibrated(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 128, 128))
    return model.eval()


def memory_child(method: str, batch_size: int, size: int) -> None:
    model = calibrated("resnet18")
    x = torch.rand(1, 3, size, size)
    camlens.explain(model, x, [method], target_layer="layer4", batch_size=batch_size)
    # VmHWM (this address space's peak), not getrusage's ru_maxrss: Linux carries ru_maxrss across
    # exec, so a child started from a large parent would report the parent's peak
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def peak_rss_mb(method: str, batch_size: int, size: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", method, str(batch_size), str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", nargs=3)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), int(args.memory_child[2]))
        return
    rounds = 1 if args.quick else 3
    size = 96 if args.quick else 224
    results: dict[str, object] = {"torch_threads": torch.get_num_threads(), "rounds": rounds, "size": size}

    # 1. all gradient/activation methods in one explain vs one Grad-CAM
    model = calibrated("resnet50")
    x = torch.rand(8, 3, size, size)
    camlens.explain(model, x[:1], ["cam"], target_layer="layer4")  # the classifier trace is cached per model
    times = round_robin(
        {
            "gradcam": lambda: camlens.explain(model, x, ["gradcam"], target_layer="layer4"),
            "all_gradient": lambda: camlens.explain(model, x, GRADIENT_METHODS, target_layer="layer4"),
        },
        rounds,
    )
    results["gradient"] = {**times, "ratio": times["all_gradient"] / times["gradcam"], "methods": len(GRADIENT_METHODS)}
    print(f"all {len(GRADIENT_METHODS)} gradient methods / gradcam (resnet50, batch 8): {results['gradient']}")

    # 2. Ablation-CAM vs pytorch-grad-cam
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam import ScoreCAM as PgcScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import ScoreCAM as TcScoreCAM

    small = calibrated("resnet18")
    x1 = torch.rand(1, 3, size, size)
    ours = camlens.explain(small, x1, ["ablationcam"], target_layer="layer4", batch_size=32)
    peer_model = copy.deepcopy(small)
    targets = [ClassifierOutputTarget(int(ours.classes[0]))]

    def pgc_ablation() -> np.ndarray:
        with AblationCAM(peer_model, [peer_model.layer4], batch_size=32) as cam:
            return cam(x1, targets=targets)

    theirs = torch.from_numpy(pgc_ablation())
    times = round_robin(
        {
            "camlens": lambda: camlens.explain(small, x1, ["ablationcam"], target_layer="layer4", batch_size=32),
            "pytorch_grad_cam": pgc_ablation,
        },
        rounds,
    )
    results["ablation"] = {
        **times,
        "speedup": times["pytorch_grad_cam"] / times["camlens"],
        "map_corr": corr(theirs[0], ours["ablationcam"][0]),
    }
    print(f"Ablation-CAM (resnet18, batch 1): {results['ablation']}")

    # 3. Score-CAM vs both peers
    tc_model = copy.deepcopy(small)
    pgc_model = copy.deepcopy(small)
    c = int(ours.classes[0])

    def torchcam_score() -> None:
        with TcScoreCAM(tc_model, "layer4", batch_size=32, input_shape=(3, size, size)) as extractor:
            extractor(c, tc_model(x1))

    def pgc_score() -> None:
        with PgcScoreCAM(pgc_model, [pgc_model.layer4]) as cam:
            cam.batch_size = 32
            cam(x1, targets=[ClassifierOutputTarget(c)])

    times = round_robin(
        {
            "camlens": lambda: camlens.explain(small, x1, ["scorecam"], target_layer="layer4", batch_size=32),
            "pytorch_grad_cam": pgc_score,
            "torchcam": torchcam_score,
        },
        max(1, rounds - 1),
    )
    results["scorecam"] = {
        **times,
        "vs_pytorch_grad_cam": times["pytorch_grad_cam"] / times["camlens"],
        "vs_torchcam": times["torchcam"] / times["camlens"],
    }
    print(f"Score-CAM (resnet18, batch 1): {results['scorecam']}")

    # 4. peak memory against batch_size (fresh processes)
    memory = {}
    for method in ("ablationcam", "scorecam"):
        for batch_size in (8, 64, 256):
            memory[f"{method}@{batch_size}"] = peak_rss_mb(method, batch_size, size)
    results["peak_rss_mb"] = memory
    print(f"peak RSS (MB), resnet18 layer4 (512 channels): {memory}")

    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "methods.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
