"""camlens speed and memory, side by side with plain inference and the peers, in one run.

    python benchmarks/run.py                 # full run (under 10 minutes on 2 cores)
    python benchmarks/run.py --quick         # fewer rounds, smoke test

Everything is measured round-robin (each round times every contender once, in turn) and reported as
medians, so a noisy shared machine slows all contenders alike; the headline numbers are *ratios* of
medians taken in the same run. Peak memory (max RSS) is measured in fresh subprocesses. Results go to
stdout as a table and to ``bench-results/benchmark.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import camlens
from camlens.zoo import DEFAULT_NETWORK, SEED_NETWORKS

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
# the eight networks of seed 001's comparison tables
SEED_TABLE_NETWORKS = [n for n in SEED_NETWORKS if n not in ("alexnet", "resnet18", "squeezenet1_1", DEFAULT_NETWORK)]


LAST_TIMES: dict[str, list[float]] = {}


def round_robin(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per contender, timing each once per round in turn (per-round times kept in LAST_TIMES)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    LAST_TIMES.clear()
    LAST_TIMES.update(times)
    return {name: statistics.median(values) for name, values in times.items()}


def paired(numerator: str, denominator: str) -> dict[str, float]:
    """Per-round ratios of two contenders timed back to back: median, min and max."""
    ratios = [a / b for a, b in zip(LAST_TIMES[numerator], LAST_TIMES[denominator], strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def speed(rounds: int, batch: int = 8, size: int = 224) -> dict:
    from captum.attr import GuidedBackprop as CaptumGB
    from captum.attr import GuidedGradCam as CaptumGuidedGradCam
    from captum.attr import LayerAttribution, LayerGradCam
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam import GradCAMPlusPlus as PgcGradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    model = resnet50()
    torch.manual_seed(1)
    x = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        classes = model(x).argmax(1)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    ours_gc = camlens.GradCAM(model, "layer4")
    ours_pp = camlens.GradCAMPlusPlus(model, "layer4")

    # the peers get their own copies: some of them change the model they are given
    pgc_model, pgcpp_model, tc_model, cap_model, capgb_model, capggc_model = (copy.deepcopy(model) for _ in range(6))
    pgc = PgcGradCAM(model=pgc_model, target_layers=[pgc_model.layer4])
    pgcpp = PgcGradCAMPlusPlus(model=pgcpp_model, target_layers=[pgcpp_model.layer4])
    torchcam = TorchcamGradCAM(tc_model, "layer4")
    captum_gc = LayerGradCam(cap_model, cap_model.layer4)
    captum_gb = CaptumGB(capgb_model)
    captum_ggc = CaptumGuidedGradCam(capggc_model, capggc_model.layer4)

    def inference():
        with torch.inference_mode():
            model(x)

    def torchcam_gradcam():
        scores = tc_model(x)
        maps = torchcam(classes.tolist(), scores)[0]
        return F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)

    def captum_gradcam():
        attribution = captum_gc.attribute(x, target=classes, relu_attributions=True)
        return LayerAttribution.interpolate(attribution, (size, size), "bilinear")

    def peers_four():
        pgc(input_tensor=x, targets=targets)
        pgcpp(input_tensor=x, targets=targets)
        captum_gb.attribute(x, target=classes)
        captum_ggc.attribute(x, target=classes)

    contenders = {
        "inference": inference,
        "camlens GradCAM": lambda: ours_gc(x),
        "camlens GradCAM++": lambda: ours_pp(x),
        "camlens explain(gradcam, gradcam++)": lambda: camlens.explain(model, x, ["gradcam", "gradcam++"], "layer4"),
        "camlens explain(all four)": lambda: camlens.explain(model, x, target_layer="layer4"),
        "pytorch-grad-cam GradCAM": lambda: pgc(input_tensor=x, targets=targets),
        "torchcam GradCAM": torchcam_gradcam,
        "captum LayerGradCam": captum_gradcam,
        "peers: four seed maps, separate calls": peers_four,
    }
    medians = round_robin(contenders, rounds)
    torchcam.remove_hooks()
    pairs = {
        f"{peer} / camlens GradCAM": paired(peer, "camlens GradCAM")
        for peer in ("inference", "pytorch-grad-cam GradCAM", "torchcam GradCAM", "captum LayerGradCam")
    }
    return {"batch": batch, "size": size, "rounds": rounds, "median_s": medians, "paired_ratios": pairs}


def scaling(rounds: int) -> list[dict]:
    """Time per image for inference and Grad-CAM at several batch sizes and resolutions."""
    model = resnet50()
    cam = camlens.GradCAM(model, "layer4")
    rows = []
    for batch, size in [(1, 224), (8, 224), (32, 224), (8, 448)]:
        torch.manual_seed(2)
        x = torch.rand(batch, 3, size, size)

        def inference(x=x):
            with torch.inference_mode():
                model(x)

        medians = round_robin({"inference": inference, "gradcam": lambda x=x: cam(x)}, rounds)
        rows.append(
            {
                "batch": batch,
                "size": size,
                "inference_ms_per_image": 1000 * medians["inference"] / batch,
                "gradcam_ms_per_image": 1000 * medians["gradcam"] / batch,
                "ratio": medians["gradcam"] / medians["inference"],
            }
        )
    return rows


MEMORY_CHILD = """
import sys, torch, torchvision, camlens

def peak_mib():
    # VmHWM belongs to this address space (reset at exec); ru_maxrss would inherit the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
x = torch.rand(int(sys.argv[2]), 3, 224, 224)
before = peak_mib()
if sys.argv[1] == "inference":
    with torch.inference_mode():
        model(x)
else:
    camlens.GradCAM(model, "layer4")(x)
print(before, peak_mib())
"""


def memory(batch: int = 32) -> dict:
    """Peak RSS (VmHWM: interpreter, model, input and the call) in fresh subprocesses."""
    out = {}
    for kind in ("inference", "gradcam"):
        result = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, kind, str(batch)], capture_output=True, text=True, check=True
        )
        before, peak = map(float, result.stdout.split())
        out[kind] = {"before_call_mib": before, "peak_mib": peak}
    out["ratio_peak"] = out["gradcam"]["peak_mib"] / out["inference"]["peak_mib"]
    out["ratio_call_growth"] = (out["gradcam"]["peak_mib"] - out["gradcam"]["before_call_mib"]) / max(
        1e-9, out["inference"]["peak_mib"] - out["inference"]["before_call_mib"]
    )
    out["batch"] = batch
    return out


def compare_profile() -> dict:
    """``camlens compare`` of the seeds' eight networks on one image: where does the time go?

    The networks get random weights through a temporary torch cache (none can be downloaded here);
    timing does not depend on the weights' values.
    """
    with tempfile.TemporaryDirectory() as home:
        checkpoints = Path(home) / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        for name in SEED_TABLE_NETWORKS:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
            model = torchvision.models.get_model(name, weights=None, **kwargs)
            torch.save(model.state_dict(), checkpoints / os.path.basename(weights.url))
            del model
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "camlens.cli.main",
                    "compare",
                    str(ROOT / "examples" / "two_cats.jpg"),
                    "--networks",
                    ",".join(SEED_TABLE_NETWORKS),
                    "--output-dir",
                    out,
                    "--offline",
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "TORCH_HOME": home},
                check=True,
            )
            wall = time.perf_counter() - start
    line = next(line for line in result.stdout.splitlines() if line.startswith("time:"))
    numbers = [float(v) for v in re.findall(r"([\d.]+) s", line)]
    models, loading, explaining, io = numbers[:4]
    return {
        "networks": SEED_TABLE_NETWORKS,
        "wall_s": wall,
        "models_s": models,
        "loading_s": loading,
        "explaining_s": explaining,
        "images_and_pictures_s": io,
        "models_share": models / (models + io),
        "line": line,
    }


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def table(report: dict) -> str:
    s = report["speed"]["median_s"]
    inf = s["inference"]
    lines = [
        f"resnet50, batch {report['speed']['batch']}, {report['speed']['size']}x{report['speed']['size']}, CPU "
        f"({report['machine']['cores']} cores, {report['machine']['cpu']}); medians of "
        f"{report['speed']['rounds']} round-robin rounds",
        "",
        "| contender | median s | x inference |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {t:.3f} | {t / inf:.2f} |" for name, t in s.items()]
    ours = s["camlens GradCAM"]
    lines += ["", "| per-round ratio (same round, back to back) | median | min | max |", "| --- | ---: | ---: | ---: |"]
    lines += [
        f"| {k} | {v['median']:.2f} | {v['min']:.2f} | {v['max']:.2f} |"
        for k, v in report["speed"]["paired_ratios"].items()
    ]
    lines += ["", "| claim (ratio of medians) | measured | floor |", "| --- | ---: | ---: |"]
    for claim, value, floor in report["claims"]:
        lines.append(f"| {claim} | {value:.2f} | {floor} |")
    lines += [
        "",
        "| batch | size | inference ms/image | Grad-CAM ms/image | ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['batch']} | {r['size']} | {r['inference_ms_per_image']:.1f} | {r['gradcam_ms_per_image']:.1f} | "
        f"{r['ratio']:.2f} |"
        for r in report["scaling"]
    ]
    m = report["memory"]
    lines += [
        "",
        f"peak RSS at batch {m['batch']}: inference {m['inference']['peak_mib']:.0f} MiB, Grad-CAM "
        f"{m['gradcam']['peak_mib']:.0f} MiB (ratio {m['ratio_peak']:.2f}; growth during the call "
        f"{m['ratio_call_growth']:.2f}x)",
    ]
    if report.get("compare"):
        c = report["compare"]
        lines += [f"camlens compare, 8 seed networks: {c['line']} (wall {c['wall_s']:.1f} s incl. start-up)"]
    del ours
    return "\n".join(lines)


def claims(report: dict) -> list[tuple[str, float, str]]:
    s = report["speed"]["median_s"]
    inf = s["inference"]
    ours = s["camlens GradCAM"]
    return [
        ("Grad-CAM / inference", ours / inf, "<= 1.15"),
        ("Grad-CAM++ / inference", s["camlens GradCAM++"] / inf, "<= 1.15"),
        ("explain(both) / inference", s["camlens explain(gradcam, gradcam++)"] / inf, "<= 1.2"),
        ("explain(all four) / inference", s["camlens explain(all four)"] / inf, "<= 3.0"),
        ("pytorch-grad-cam GradCAM / camlens GradCAM", s["pytorch-grad-cam GradCAM"] / ours, ">= 2.5"),
        ("torchcam GradCAM / camlens GradCAM", s["torchcam GradCAM"] / ours, ">= 1.0"),
        ("captum LayerGradCam / camlens GradCAM", s["captum LayerGradCam"] / ours, ">= 1.0"),
        (
            "peers' four calls / camlens explain(all four)",
            s["peers: four seed maps, separate calls"] / s["camlens explain(all four)"],
            ">= 3.0",
        ),
        ("peak RSS Grad-CAM / inference (batch 32)", report["memory"]["ratio_peak"], "<= 1.3"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, no compare profile")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "bench-results" / "benchmark.json"))
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 7)
    start = time.perf_counter()
    report = {"machine": machine()}
    report["speed"] = speed(rounds)
    report["scaling"] = scaling(max(2, rounds // 2))
    report["memory"] = memory()
    report["compare"] = None if args.quick else compare_profile()
    report["claims"] = claims(report)
    report["total_s"] = time.perf_counter() - start
    print(table(report))
    print(f"\nbenchmark took {report['total_s']:.0f} s")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
