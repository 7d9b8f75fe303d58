"""Which metric to believe: rank methods by their overlap with evidence whose place is known, then ask
each faithfulness metric whether it ranks the methods the same way.

On real photos nobody knows where a model's evidence is, so a faithfulness metric can only be checked
against another metric. On the synthetic task of :mod:`camlens.synthetic` (the class is the colour of a
square patch; a distractor square of a colour of no class sits elsewhere), a model that classifies
correctly must use the patch, so each method's *evidence mass* (the share of its map's energy inside
the patch, the energy pointing game against the true box) and *evidence peak* (its maximum inside the
patch) are a ground truth for how well it shows the evidence.

:func:`ground_truth_report` explains a batch of such images with every method, adds two control maps
that ignore the model (``control:random``, uniform noise, and ``control:centre``, a centred Gaussian),
scores every map with the ground truth and with the chosen metrics, and gives, per metric, Kendall's
tau-b between the method ranking it implies (its direction taken into account) and the ground-truth
ranking. A metric with a high tau ranks methods as their true overlap does; one near 0 or negative
does not, on this task.

The assumption: a model that is right on this task uses the patch. It is exactly true of the colour
itself (no other pixel says the class) but not of *how* the model reads it (edges of the patch, or
"no other colour" evidence from the background), so the evidence mass of the best method is below 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camlens.metrics._common import saliency_2d
from camlens.metrics.evaluate import evaluate, summarise
from camlens.metrics.localisation import boxes_to_masks, energy_pointing_game, pointing_game
from camlens.metrics.registry import get_metric

#: Metrics scored against the ground truth by default (every model-based and map-only metric).
DEFAULT_METRICS = (
    "deletion", "insertion", "average_drop", "increase_in_confidence", "average_gain", "road", "coherency",
    "complexity", "adcc", "sparseness",
)  # fmt: skip
CONTROLS = ("control:random", "control:centre")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties counted as in tau-b); NaN when undefined.

    Example:
        >>> kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]), kendall_tau([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    if len(a) != len(b):
        raise ValueError(f"sequences of different lengths: {len(a)} and {len(b)}")
    concordant = discordant = ties_a = ties_b = 0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def control_maps(batch: int, height: int, width: int, seed: int = 0) -> dict[str, Tensor]:
    """The two model-blind maps: uniform noise (seeded) and a centred Gaussian (sigma = side / 4)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1) - (height - 1) / 2
    cols = torch.arange(width, dtype=torch.float32).view(1, -1) - (width - 1) / 2
    centre = torch.exp(-(rows**2 / (2 * (height / 4) ** 2) + cols**2 / (2 * (width / 4) ** 2)))
    return {
        "control:random": torch.rand(batch, height, width, generator=generator),
        "control:centre": centre.expand(batch, height, width).clone(),
    }


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boolean masks ``(N, H, W)`` of boxes ``(top, left, bottom, right)`` (bottom/right exclusive),
    the layout of :class:`camlens.synthetic.PatchData`; :func:`boxes_to_masks` takes ``(x0, y0, x1, y1)``."""
    return boxes_to_masks(
        [[(left, top, right, bottom)] for top, left, bottom, right in boxes.tolist()], (height, width)
    )


@dataclass
class GroundTruthReport:
    """Per method: ground truth and metric means; per metric: agreement with the ground truth.

    Attributes:
        methods: one row per method: ``method``, ``evidence_mass``, ``evidence_peak`` and each metric's
            mean over the images.
        agreement: one row per metric: ``metric``, ``higher_is_better``, ``kendall_tau`` (against the
            evidence-mass ranking, over the methods it scored, controls included where it can score
            them), ``n_methods``, and ``controls_last`` (whether it ranks both controls below every
            method).
        skipped: method -> why it could not be explained on this model.
        rows: the per-image metric rows (as :func:`camlens.metrics.evaluate` gives them).
    """

    methods: list[dict[str, Any]]
    agreement: list[dict[str, Any]]
    skipped: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_markdown(self, digits: int = 3) -> str:
        """Two tables: methods ranked by evidence mass, and metrics ranked by their agreement."""
        metric_names = [row["metric"] for row in self.agreement]
        header = ["method", "evidence mass", "evidence peak", *metric_names]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.methods:
            cells = [row["method"], f"{row['evidence_mass']:.{digits}f}", f"{row['evidence_peak']:.{digits}f}"]
            cells += [_fmt(row.get(m), digits) for m in metric_names]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| metric | higher is better | Kendall tau vs evidence mass | methods | controls ranked last |"]
        lines.append("|---|---|---|---|---|")
        for row in sorted(self.agreement, key=lambda r: -_nan_low(r["kendall_tau"])):
            lines.append(
                f"| {row['metric']} | {'yes' if row['higher_is_better'] else 'no'} | {_fmt(row['kendall_tau'], 2)} "
                f"| {row['n_methods']} | {'yes' if row['controls_last'] else 'no'} |"
            )
        return "\n".join(lines) + "\n"


def _fmt(value: Any, digits: int) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def _nan_low(value: float) -> float:
    return value if value == value else float("-inf")


def ground_truth_report(
    model: nn.Module,
    images: Tensor,
    boxes: Tensor,
    methods: Sequence[str] | Mapping[str, Tensor],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    targets: Tensor | None = None,
    target_layer: Any = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> GroundTruthReport:
    """Score ``methods`` (and the controls) against the true evidence boxes and with ``metrics``.

    Args:
        model: a classifier of the synthetic task (left untouched).
        images: ``(N, 3, H, W)``.
        boxes: ``(N, 4)`` the evidence as ``(top, left, bottom, right)`` (:class:`camlens.synthetic.PatchData`).
        methods: camlens method names (one that cannot run on this model is skipped and said why), or
            ``{name: maps}`` of maps computed elsewhere (``(N, H, W)``; metrics that explain again with
            the method, such as ``coherency``, are then left out).
        metrics: metric names (the pointing games are the ground truth here, not metrics to rank).
        targets: the classes explained (None: the predictions).
        target_layer: for the CAM methods (None: the automatic layer).
        options: per-metric keyword options, e.g. ``{"deletion": {"steps": 16}}``.
        seed: for the random control.
    """
    from camlens.explanation import explain

    specs = [get_metric(name) for name in metrics]
    height, width = images.shape[-2:]
    masks = box_masks(boxes, height, width)
    maps: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    given = isinstance(methods, Mapping)
    if isinstance(methods, Mapping):
        maps.update({name: saliency_2d(m).float() for name, m in methods.items()})
    else:
        for method in methods:
            try:
                maps[method] = saliency_2d(explain(model, images, [method], target_layer, targets)[method]).float()
            except (ValueError, TypeError, RuntimeError) as error:
                skipped[method] = str(error).splitlines()[0]
    blind = control_maps(len(images), height, width, seed)
    maps.update(blind)

    rows: list[dict[str, Any]] = []
    for method, method_maps in maps.items():
        usable = [s.name for s in specs if not (s.needs_method and (given or method in blind))]
        picked = {name: dict((options or {}).get(name, {})) for name in usable}
        rows += evaluate(
            model, images, {method: method_maps}, usable, targets, target_layer=target_layer, options=picked
        )
    means = {(r["method"], r["metric"]): r["mean"] for r in summarise(rows)}

    table = []
    for method, method_maps in maps.items():
        row: dict[str, Any] = {
            "method": method,
            "evidence_mass": float(energy_pointing_game(method_maps, masks).values.nanmean()),
            "evidence_peak": float(pointing_game(method_maps, masks, tolerance=0).values.nanmean()),
        }
        row.update({s.name: means[(method, s.name)] for s in specs if (method, s.name) in means})
        table.append(row)
    table.sort(key=lambda r: -r["evidence_mass"])

    agreement = []
    for spec in specs:
        scored = [r for r in table if spec.name in r and r[spec.name] == r[spec.name]]
        sign = 1.0 if spec.higher_is_better else -1.0
        truth = [r["evidence_mass"] for r in scored]
        said = [sign * r[spec.name] for r in scored]
        controls = [v for r, v in zip(scored, said, strict=True) if r["method"] in CONTROLS]
        others = [v for r, v in zip(scored, said, strict=True) if r["method"] not in CONTROLS]
        agreement.append(
            {
                "metric": spec.name,
                "higher_is_better": spec.higher_is_better,
                "kendall_tau": kendall_tau(truth, said) if len(scored) >= 2 else float("nan"),
                "n_methods": len(scored),
                "controls_last": bool(controls) and bool(others) and max(controls) < min(others),
            }
        )
    return GroundTruthReport(table, agreement, skipped, rows)
