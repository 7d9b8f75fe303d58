"""Meaning across training seeds: does the automatic layer's Grad-CAM point at the evidence?

Trains :class:`~camlens.synthetic.TinyCNN` and :class:`~camlens.synthetic.TinyViT` on the coloured-patch
task (:mod:`camlens.synthetic`: the class is the colour of an 8 x 8 patch in a 32 x 32 grey texture with a
grey distractor; chance = 6.25%) once per seed, and scores each map by whether its peak lies inside the
patch (``peak_in_box_rate``) on held-out images, at the automatic layer and at hand-picked layers:

* CNN: the automatic layer (the last block's ReLU output, = pytorch-grad-cam's ``features[-1]``), the
  pre-activation (the last batch norm's output) and the last convolution (before its batch norm: the same
  peak as the batch norm's output, since Grad-CAM there differs by a constant);
* ViT: Grad-CAM at the automatic layer (the last block's ``norm1``, pytorch-grad-cam's FAQ layer), the
  share of images whose Grad-CAM is zero everywhere (its signed map negative at every position), and the
  methods that need no sign convention at a token layer (gradcam_elementwise, LeGrad, FullGrad), the
  attention methods (attention rollout, Chefer et al.'s generic attention and transformer attribution,
  AttnLRP), and Grad-CAM at each block's norm and output;
* both: every method that could be ``auto``'s choice for the family, at the automatic layer, and whether
  Chefer et al.'s claim (gradient-weighted attention beats rollout and Grad-CAM on ViTs) holds per seed.

Writes ``docs/evaluation/synthetic_meaning.md`` and ``synthetic_meaning.json``.

    python benchmarks/synthetic_meaning.py             # 10 ViT and 5 CNN seeds, 500 test images (~20 min, 2 busy cores)
    python benchmarks/synthetic_meaning.py --quick     # 2 seeds, 200 test images
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

import camlens
from camlens.synthetic import TinyCNN, TinyViT, patch_dataset, peak_in_box_rate, train

DOCS = Path(__file__).resolve().parents[1] / "docs" / "evaluation"
CHANCE = (8 * 8) / (32 * 32)
CNN_LAYERS = {
    "automatic": None,
    "pre-activation (features.8, BN)": "features.8",
    "last conv (features.7)": "features.7",
}
CNN_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam_elementwise", "fullgrad"]
ATTENTION = ["attention_rollout", "generic_attention", "transformer_attribution", "attnlrp"]
VIT_METHODS = ["gradcam", "hirescam", "gradcam_elementwise", "legrad", "fullgrad", *ATTENTION]
GRADIENT_WEIGHTED = ["generic_attention", "transformer_attribution"]  # Chefer et al.'s two methods
VIT_LAYERS = ["patch_embed", "blocks.0.norm1", "blocks.0", "blocks.1.norm1", "blocks.1", "blocks.2.norm1"]


def rates(model: torch.nn.Module, images: torch.Tensor, boxes: torch.Tensor, methods: list[str], layer=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the zero-everywhere notes, counted below instead
        result = camlens.explain(model, images, methods, target_layer=layer)
    out = {m: peak_in_box_rate(result[m], boxes) for m in methods}
    raw = result.raw["gradcam"].flatten(1) if "gradcam" in methods else None
    zero = None if raw is None else float((raw.amax(dim=1) <= 0).float().mean())
    return result.target_layer, out, zero


def cnn_row(seed: int, train_set, test_set) -> dict:
    torch.manual_seed(seed)
    cnn = TinyCNN()
    accuracy = train(cnn, train_set, steps=250, seed=seed)
    name, out, _ = rates(cnn, test_set.images, test_set.boxes, CNN_METHODS)
    row = {"seed": seed, "train_accuracy": accuracy, "methods": out}
    for label, layer in CNN_LAYERS.items():
        name, out, _ = rates(cnn, test_set.images, test_set.boxes, ["gradcam"], layer)
        row[label] = out["gradcam"]
        row.setdefault("automatic_layer", name)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="ViT training seeds (default 10; --quick 2)")
    parser.add_argument("--cnn-seeds", type=int, default=None, help="CNN training seeds (default 5; --quick 2)")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/evaluation (--quick: bench-results)")
    args = parser.parse_args()
    seeds = args.seeds or (2 if args.quick else 10)
    cnn_seeds = args.cnn_seeds or (2 if args.quick else 5)
    n_test = 200 if args.quick else 500
    args.out = args.out or (Path("bench-results") if args.quick else DOCS)
    train_set, test_set = patch_dataset(1500, seed=0), patch_dataset(n_test, seed=1)
    cnn_rows, vit_rows = [], []
    started = time.perf_counter()
    for seed in range(max(seeds, cnn_seeds)):
        if seed < cnn_seeds:
            cnn_rows.append(cnn_row(seed, train_set, test_set))
            print(f"seed {seed}: CNN {cnn_rows[-1]}", flush=True)
        if seed >= seeds:
            continue
        torch.manual_seed(seed)
        vit = TinyViT()
        accuracy = train(vit, train_set, steps=250, seed=seed)
        name, out, zero = rates(vit, test_set.images, test_set.boxes, VIT_METHODS)
        by_layer = {
            layer: rates(vit, test_set.images, test_set.boxes, ["gradcam"], layer)[1]["gradcam"] for layer in VIT_LAYERS
        }
        vit_rows.append({"seed": seed, "train_accuracy": accuracy, "automatic_layer": name, **out})
        vit_rows[-1].update(gradcam_zero=zero, gradcam_by_layer=by_layer)
        print(f"seed {seed}: ViT {vit_rows[-1]}", flush=True)
    took = time.perf_counter() - started
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "seeds": seeds,
        "cnn_seeds": cnn_seeds,
        "test_images": n_test,
        "chance": CHANCE,
        "seconds": round(took),
        "cnn": cnn_rows,
        "vit": vit_rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "synthetic_meaning.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "synthetic_meaning.md").write_text(to_markdown(record))
    print(to_markdown(record))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[str]], last: list[str]) -> list[str]:
    """A right-aligned markdown table with a bold last row."""
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return [line(header), "|" + "---:|" * len(header), *map(line, rows), line([f"**{c}**" if c else c for c in last])]


def _get(row: dict, method: str) -> float:
    """A method's rate in a CNN row (under ``methods``) or a ViT row (at the top)."""
    return row["methods"][method] if "methods" in row else row[method]


def ranked(rows: list[dict], methods: list[str]) -> list[tuple[str, float]]:
    """The methods by their mean rate over the seeds, best first (ties keep the order of ``methods``)."""
    means = {m: statistics.fmean(_get(r, m) for r in rows) for m in methods}
    return sorted(means.items(), key=lambda item: -item[1])


def _ranking(family: str, rows: list[dict], methods: list[str]) -> list[str]:
    best, value = ranked(rows, methods)[0]
    at_least = sum(_get(r, best) >= _get(r, "gradcam") for r in rows)
    lowest = min(_get(r, best) for r in rows)
    gradcam = statistics.fmean(_get(r, "gradcam") for r in rows)
    return [family, f"`{best}`", _pct(value), _pct(lowest), f"{at_least} of {len(rows)}", _pct(gradcam)]


def _claim(vit: list[dict]) -> list[str]:
    """Chefer et al.'s claim, tested per method: above rollout and Grad-CAM, on average and per seed."""
    mean = lambda m: statistics.fmean(r[m] for r in vit)  # noqa: E731
    lines = ["### Chefer et al.'s claim: gradient-weighted attention beats rollout and Grad-CAM on ViTs", ""]
    verdicts = []
    for method in GRADIENT_WEIGHTED:
        over = {other: sum(r[method] > r[other] for r in vit) for other in ("attention_rollout", "gradcam")}
        holds = all(mean(method) > mean(other) for other in over)
        verdicts.append(holds)
        lines.append(
            f"* `{method}` {_pct(mean(method))}% on average against rollout {_pct(mean('attention_rollout'))}% and "
            f"Grad-CAM {_pct(mean('gradcam'))}%; above rollout on {over['attention_rollout']} of {len(vit)} seeds, "
            f"above Grad-CAM on {over['gradcam']} of {len(vit)}: {'holds' if holds else 'does not hold'} on average."
        )
    overall = "holds" if all(verdicts) else "partly holds" if any(verdicts) else "does not hold"
    lines += ["", f"On this ground truth the claim **{overall}** (each method above both, on average)."]
    return lines


def to_markdown(record: dict) -> str:
    cnn, vit, chance = record["cnn"], record["vit"], record["chance"]
    labels = list(CNN_LAYERS)
    mean = lambda rows, get: _pct(statistics.fmean(map(get, rows)))  # noqa: E731
    lines = [
        "# Meaning across training seeds (peak of the map inside the evidence patch, %)",
        "",
        f"Produced by `python benchmarks/synthetic_meaning.py` ({record['seeds']} training seeds for the ViT, "
        f"{record.get('cnn_seeds', record['seeds'])} for the CNN, "
        f"{record['test_images']} held-out images, {record['machine']}, {record['seconds']} s). Chance: "
        f"{100 * chance:.2f}%. Every model reaches the train accuracy shown.",
        "",
        f"## TinyCNN, Grad-CAM (automatic layer: `{cnn[0]['automatic_layer']}`)",
        "",
        *_table(
            ["seed", "train acc.", *labels],
            [[str(r["seed"]), f"{r['train_accuracy']:.3f}", *(_pct(r[k]) for k in labels)] for r in cnn],
            ["mean", "", *(mean(cnn, lambda r, k=k: r[k]) for k in labels)],
        ),
        "",
        f"The automatic layer is at least as good as the pre-activation on "
        f"{sum(r[labels[0]] >= r[labels[1]] for r in cnn)} of {len(cnn)} seeds.",
        "",
        "### TinyCNN, every method at the automatic layer",
        "",
        *_table(
            ["seed", *CNN_METHODS],
            [[str(r["seed"]), *(_pct(r["methods"][m]) for m in CNN_METHODS)] for r in cnn],
            ["mean", *(mean(cnn, lambda r, m=m: r["methods"][m]) for m in CNN_METHODS)],
        ),
        "",
        f"## TinyViT (automatic layer: `{vit[0]['automatic_layer']}`)",
        "",
        *_table(
            ["seed", "train acc.", "Grad-CAM zero everywhere", *VIT_METHODS],
            [
                [
                    str(r["seed"]),
                    f"{r['train_accuracy']:.3f}",
                    _pct(r["gradcam_zero"]),
                    *(_pct(r[m]) for m in VIT_METHODS),
                ]
                for r in vit
            ],
            [
                "mean",
                "",
                mean(vit, lambda r: r["gradcam_zero"]),
                *(mean(vit, lambda r, m=m: r[m]) for m in VIT_METHODS),
            ],
        ),
        "",
        f"Grad-CAM at the automatic layer is below twice chance on "
        f"{sum(r['gradcam'] < 2 * chance for r in vit)} of {len(vit)} seeds.",
        "",
        *_claim(vit),
        "",
        "## Ranking per family (the choice of `auto`: `camlens/catalog.py`, `AUTO_CHOICE`)",
        "",
        *_table(
            ["family", "best method (mean)", "mean", "lowest seed", "seeds >= Grad-CAM", "Grad-CAM mean"],
            [_ranking("class-token ViT (TinyViT)", vit, VIT_METHODS), _ranking("CNN (TinyCNN)", cnn, CNN_METHODS)],
            [""] * 6,
        )[:-1],
        "",
        "### TinyViT, Grad-CAM by layer",
        "",
        *_table(
            ["seed", *(f"`{layer}`" for layer in VIT_LAYERS)],
            [[str(r["seed"]), *(_pct(r["gradcam_by_layer"][k]) for k in VIT_LAYERS)] for r in vit],
            ["lowest", *(_pct(min(r["gradcam_by_layer"][k] for r in vit)) for k in VIT_LAYERS)],
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
