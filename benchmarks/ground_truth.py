"""The ground-truth benchmark: which method shows the evidence, and which metric knows it.

Trains a tiny CNN and a tiny ViT (:mod:`camlens.synthetic`) on the coloured-patch task (the class is the
colour of an 8 x 8 patch in a 32 x 32 texture, with a distractor square of a colour of no class), then
:func:`camlens.metrics.ground_truth.ground_truth_report` explains held-out images with every method,
ranks the methods by the share of their map inside the true patch, and gives each metric's Kendall tau
against that ranking. Writes ``docs/evaluation/ground_truth.md`` and ``ground_truth.json``.

    python benchmarks/ground_truth.py            # 32 test images, about 10 minutes on 2 CPU cores
    python benchmarks/ground_truth.py --quick    # 8 test images, a few methods (smoke test)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from camlens.metrics.ground_truth import DEFAULT_METRICS, ground_truth_report
from camlens.names import METHODS
from camlens.synthetic import TinyCNN, TinyViT, patch_dataset, train

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/evaluation (--quick: bench-results)")
    args = parser.parse_args()
    args.out = args.out or (Path("bench-results") if args.quick else DOCS)
    n_test = 8 if args.quick else 32
    methods = ["gradcam", "gradcam++", "scorecam", "guided_backprop", "legrad"] if args.quick else list(METHODS)
    train_set = patch_dataset(1500, seed=0, distractor="colour")
    test_set = patch_dataset(n_test, seed=1, distractor="colour")
    steps = {"steps": 16}
    sections, record = [], {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                            "test_images": n_test, "models": {}}  # fmt: skip
    for name, make in (("TinyCNN", TinyCNN), ("TinyViT", TinyViT)):
        torch.manual_seed(0)
        model = make()
        started = time.perf_counter()
        accuracy = train(model, train_set, steps=250)
        trained = time.perf_counter() - started
        with torch.no_grad():
            test_accuracy = float((model(test_set.images).argmax(1) == test_set.labels).float().mean())
        started = time.perf_counter()
        report = ground_truth_report(
            model, test_set.images, test_set.boxes, methods, DEFAULT_METRICS, targets=test_set.labels,
            options={"deletion": steps, "insertion": steps},
        )  # fmt: skip
        took = time.perf_counter() - started
        print(f"{name}: train accuracy {accuracy:.3f}, test {test_accuracy:.3f}, trained in {trained:.0f} s, "
              f"report in {took:.0f} s")  # fmt: skip
        print(report.to_markdown())
        skipped = "".join(f"- `{m}`: {why}\n" for m, why in report.skipped.items())
        sections.append(
            f"## {name} (train accuracy {accuracy:.3f}, test accuracy {test_accuracy:.3f})\n\n"
            f"{report.to_markdown()}\n" + (f"Not run on this model:\n\n{skipped}\n" if skipped else "")
        )
        record["models"][name] = {
            "train_accuracy": accuracy, "test_accuracy": test_accuracy, "methods": report.methods,
            "agreement": report.agreement, "skipped": report.skipped, "seconds": took,
        }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        "# Ground truth: which method shows the evidence, and which metric knows it\n\n"
        "Produced by `python benchmarks/ground_truth.py` "
        f"({n_test} held-out images of the coloured-patch task, 32 x 32, colour distractors; "
        f"{record['machine']}). Evidence mass: the share of the map's energy inside the true patch (the "
        "patch covers 6.25% of the image); evidence peak: the share of maps whose maximum lies in it. "
        "`control:random` and `control:centre` ignore the model. The second table gives each metric's "
        "Kendall tau-b against the evidence-mass ranking of the methods (its direction taken into account) "
        "and whether it ranks both controls below every method.\n\n"
    )
    (args.out / "ground_truth.md").write_text(header + "\n".join(sections), encoding="utf-8")
    (args.out / "ground_truth.json").write_text(json.dumps(record, indent=1, default=float), encoding="utf-8")
    print(f"wrote {args.out / 'ground_truth.md'} and ground_truth.json")


if __name__ == "__main__":
    main()
