"""``evaluate``: methods x metrics x images in one call, and the mean with a 95% bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch  # noqa: F401 (the doctests use it)
from torch import Tensor, nn

from camlens.layers import LayerSpec
from camlens.layouts import LayoutSpec
from camlens.metrics._common import fixed_classes, saliency_2d
from camlens.metrics.registry import METRICS, get_metric
from camlens.targets import Targets

# the fewest finite values that get an interval (below: "n too small"), and the bootstrap's fixed settings
MIN_INTERVAL_N = 5
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
TOO_SMALL = "n too small"

# two-sided 95% Student t quantiles t_{0.975, df}, df = 1..30 (beyond: the normal 1.96 is within 2%)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (1.96 beyond 30)."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def evaluate(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str] | Mapping[str, Tensor],
    metrics: Sequence[str],
    targets: Targets = None,
    masks: Tensor | None = None,
    *,
    target_layer: LayerSpec = None,
    layout: LayoutSpec = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    keep_results: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate every method's maps with every metric: one row per (method, metric, image).

    Args:
        model: left untouched.
        x: images ``(B, C, H, W)``.
        methods: camlens method names (explained here, all from one capture), or ``{name: maps}`` of
            ready maps (then the metrics that explain again need ``name`` to be a camlens method).
        metrics: names from :func:`camlens.metrics.available_metrics`.
        targets: the classes (None: the prediction on the clean image, fixed throughout).
        masks: ``(B, H, W)`` bool object masks, for the pointing games.
        target_layer: for the CAM methods.
        layout: the target layer's layout (``explain(layout=...)``), also where a metric explains again.
        options: per-metric keyword options, e.g. ``{"deletion": {"steps": 20}}``.
        keep_results: add the :class:`MetricResult` (with its curve) to each row as ``"result"``.

    Every map is first made a ``(B, H, W)`` saliency in [0, 1] by :func:`saliency_2d` (guided maps:
    ``|sum over channels|``, then per-image min-max).

    Returns:
        rows ``{"method", "metric", "image", "value", "higher_is_better"}``; see :func:`summarise`.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18(num_classes=3).eval()
        >>> rows = evaluate(model, torch.rand(2, 3, 32, 32), ["gradcam"], ["deletion", "sparseness"],
        ...                 options={"deletion": {"steps": 4}})
        >>> [(r["metric"], r["image"]) for r in rows]
        [('deletion', 0), ('deletion', 1), ('sparseness', 0), ('sparseness', 1)]
    """
    from camlens.explanation import explain
    from camlens.metrics.recompute import method_fn

    specs = [get_metric(name) for name in metrics]
    if any(s.kind == "mask" for s in specs) and masks is None:
        raise ValueError("the pointing games need masks=(B, H, W) bool object masks (see boxes_to_masks)")
    options = options or {}
    classes = fixed_classes(model, x, targets)
    if isinstance(methods, Mapping):
        maps = {name: saliency_2d(m) for name, m in methods.items()}
    else:
        names = [methods] if isinstance(methods, str) else list(methods)
        result = explain(model, x, names, target_layer, classes, layout=layout)
        maps = {name: saliency_2d(result[name]) for name in names}
    rows: list[dict[str, Any]] = []
    for method, method_maps in maps.items():
        for spec in specs:
            kwargs = dict(spec.options)
            kwargs.update(options.get(spec.name, {}))
            if spec.kind == "map":
                res = spec.fn(method_maps, **kwargs)
            elif spec.kind == "mask":
                assert masks is not None
                res = spec.fn(method_maps, masks.to(method_maps.device), **kwargs)
            else:
                if spec.needs_method:
                    kwargs.setdefault("target_layer", target_layer)
                    if "method" not in kwargs:  # a stated layout: the method explains again with it
                        layer = kwargs["target_layer"]
                        kwargs["method"] = method if layout is None else method_fn(model, method, layer, layout)
                res = spec.fn(model, x, method_maps, classes, **kwargs)
            for image, value in enumerate(res.values.tolist()):
                row: dict[str, Any] = {
                    "method": method,
                    "metric": spec.name,
                    "image": image,
                    "value": float(value),
                    "higher_is_better": res.higher_is_better,
                }
                if keep_results:
                    row["result"] = res
                rows.append(row)
    return rows


def mean_ci(values: Sequence[float], confidence_t: float | None = None) -> tuple[float, float, float, int]:
    """Mean, and the half-width of its 95% t confidence interval, over the finite ``values``: ``(mean, low, high, n)``.

    Example:
        >>> mean_ci([1.0, 2.0, 3.0])  # doctest: +ELLIPSIS
        (2.0, -0.484..., 4.484..., 3)
    """
    finite = [float(v) for v in values if math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = sum(finite) / n
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half = (confidence_t or t_quantile_975(n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n


def bootstrap_interval(
    values: Sequence[float],
    value_range: tuple[float, float] | None = None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
    min_n: int = MIN_INTERVAL_N,
) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean of the finite ``values``, or None below ``min_n`` of them.

    ``resamples`` resamples of n values with replacement (``numpy.random.default_rng(seed)``, so the same
    values give the same interval); the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of their means, clipped to ``value_range`` (the metric's range; None: unbounded).

    Example:
        >>> bootstrap_interval([0.2, 0.3]) is None  # fewer than 5 images: no interval
        True
        >>> low, high = bootstrap_interval([0.1, 0.2, 0.3, 0.4, 0.5], (0.0, 1.0))
        >>> 0.1 <= low < 0.3 < high <= 0.5
        True
    """
    import numpy as np

    finite = np.array([float(v) for v in values if math.isfinite(float(v))], dtype=np.float64)
    if finite.size < max(min_n, 1):
        return None
    rng = np.random.default_rng(seed)
    means = finite[rng.integers(0, finite.size, size=(resamples, finite.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    if value_range is not None:
        low, high = np.clip([low, high], value_range[0], value_range[1])
    return float(low), float(high)


def summarise(
    rows: Sequence[Mapping[str, Any]], options: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Per (method, metric): mean, 95% percentile-bootstrap interval and n (NaN values, e.g. empty masks, skipped).

    The interval (:func:`bootstrap_interval`, 1000 resamples, seed 0) is clipped to the metric's range
    (``MetricSpec.range_for(options[metric])``, ``options`` as given to :func:`evaluate`); with fewer than
    5 finite values ``ci_low`` and ``ci_high`` are None ("n too small").

    Example:
        >>> rows = [{"method": "m", "metric": "d", "value": v, "higher_is_better": False} for v in (1.0, 3.0)]
        >>> summarise(rows)[0]["mean"], summarise(rows)[0]["n"], summarise(rows)[0]["ci_low"]
        (2.0, 2, None)
    """
    groups: dict[tuple[str, str], list[float]] = {}
    direction: dict[str, bool] = {}
    for row in rows:
        groups.setdefault((row["method"], row["metric"]), []).append(float(row["value"]))
        direction[row["metric"]] = bool(row.get("higher_is_better", True))
    out = []
    for (method, metric), values in groups.items():
        finite = [v for v in values if math.isfinite(v)]
        n = len(finite)
        mean = sum(finite) / n if n else float("nan")
        spec = METRICS.get(metric)
        value_range = spec.range_for((options or {}).get(metric)) if spec is not None else None
        interval = bootstrap_interval(finite, value_range)
        low, high = interval if interval is not None else (None, None)
        out.append(
            {"method": method, "metric": metric, "mean": mean, "ci_low": low, "ci_high": high, "n": n,
             "higher_is_better": direction[metric]}
        )  # fmt: skip
    return out


def to_markdown(summary: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A methods x metrics Markdown table of ``mean [low, high]`` with each metric's direction; a cell with no
    interval (fewer than 5 images) reads ``mean (n too small)``.

    Example:
        >>> print(to_markdown([{"method": "gradcam", "metric": "deletion", "mean": 0.1, "ci_low": 0.05,
        ...                     "ci_high": 0.15, "higher_is_better": False},
        ...                    {"method": "gradcam", "metric": "insertion", "mean": 0.4, "ci_low": None,
        ...                     "ci_high": None, "n": 2, "higher_is_better": True}]))
        | method | deletion (lower better) | insertion (higher better) |
        |---|---|---|
        | gradcam | 0.100 [0.050, 0.150] | 0.400 (n too small) |
    """
    methods = list(dict.fromkeys(r["method"] for r in summary))
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    cell = {(r["method"], r["metric"]): r for r in summary}
    better = {r["metric"]: "higher" if r["higher_is_better"] else "lower" for r in summary}
    lines = ["| method | " + " | ".join(f"{m} ({better[m]} better)" for m in metrics) + " |"]
    lines.append("|---|" + "---|" * len(metrics))
    for method in methods:
        parts = []
        for metric in metrics:
            r = cell.get((method, metric))
            if r is None:
                parts.append("")
            elif r.get("ci_low") is not None and math.isfinite(r["ci_low"]):
                parts.append(f"{r['mean']:.{digits}f} [{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]")
            elif r.get("n", MIN_INTERVAL_N) < MIN_INTERVAL_N:
                parts.append(f"{r['mean']:.{digits}f} ({TOO_SMALL})")
            else:
                parts.append(f"{r['mean']:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
