"""The metric registry: every metric's function, direction and what it needs, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from camlens.metrics import localisation, perturbation, recompute
from camlens.metrics.road import road


@dataclass(frozen=True)
class MetricSpec:
    """How to call a metric and read its values.

    Attributes:
        name: the registry name.
        fn: the functional form.
        higher_is_better: the direction of its values.
        kind: ``"model"`` (``fn(model, x, maps, targets, **options)``), ``"mask"`` (``fn(maps, masks)``)
            or ``"map"`` (``fn(maps)``).
        needs_method: also takes ``method=`` and ``target_layer=`` (it explains again).
        options: fixed options passed to ``fn`` (e.g. ROAD's order).
        paper: where it comes from.
        value_range: ``(low, high)`` every value lies in (with softmax probabilities, the default score),
            or None when unbounded; ``evaluate``'s intervals are clipped to it.
        score_dependent: the range holds only for ``score="probability"`` (a ``score="logit"`` option
            makes the values unbounded).
    """

    name: str
    fn: Callable[..., Any]
    higher_is_better: bool
    kind: str = "model"
    needs_method: bool = False
    options: tuple[tuple[str, Any], ...] = ()
    paper: str = ""
    value_range: tuple[float, float] | None = None
    score_dependent: bool = False

    def range_for(self, options: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
        """The range of the values under these options (``evaluate``'s per-metric options).

        Example:
            >>> METRICS["deletion"].range_for(), METRICS["deletion"].range_for({"score": "logit"})
            ((0.0, 1.0), None)
        """
        if self.score_dependent and dict(options or {}).get("score", "probability") != "probability":
            return None
        return self.value_range


UNIT = (0.0, 1.0)
PERCENT = (0.0, 100.0)
METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to the registry (its name must be new)."""
    if spec.name in METRICS:
        raise ValueError(f"metric {spec.name!r} is already registered")
    METRICS[spec.name] = spec
    return spec


for _spec in (
    # deletion/insertion: the area under a probability curve over fractions in [0, 1]
    MetricSpec("deletion", perturbation.deletion, False, paper="Petsiuk et al. 2018 (RISE)",
               value_range=UNIT, score_dependent=True),
    MetricSpec("insertion", perturbation.insertion, True, paper="Petsiuk et al. 2018 (RISE)",
               value_range=UNIT, score_dependent=True),
    # 100 * max(0, Y - O) / Y, 100 * [Y < O], 100 * max(0, O - Y) / (1 - Y)
    MetricSpec("average_drop", perturbation.average_drop, False, paper="Chattopadhyay et al. 2018 (Grad-CAM++)",
               value_range=PERCENT, score_dependent=True),
    MetricSpec("increase_in_confidence", perturbation.increase_in_confidence, True, paper="Chattopadhyay et al. 2018",
               value_range=PERCENT),
    MetricSpec("average_gain", perturbation.average_gain, True, paper="Zhang et al. 2023 (Opti-CAM)",
               value_range=PERCENT),
    # ROAD: mean probabilities; combined is mean (LeRF - MoRF) / 2
    MetricSpec("road", road, True, options=(("order", "combined"),), paper="Rong et al. 2022 (ROAD)",
               value_range=(-0.5, 0.5), score_dependent=True),
    MetricSpec("road_morf", road, False, options=(("order", "morf"),), paper="Rong et al. 2022 (ROAD)",
               value_range=UNIT, score_dependent=True),
    MetricSpec("road_lerf", road, True, options=(("order", "lerf"),), paper="Rong et al. 2022 (ROAD)",
               value_range=UNIT, score_dependent=True),
    # a correlation rescaled to [0, 1], a mean of [0, 1] maps, harmonic means of [0, 1] terms
    MetricSpec("coherency", recompute.coherency, True, needs_method=True, paper="Poppi et al. 2021", value_range=UNIT),
    MetricSpec("complexity", recompute.complexity, False, kind="map", paper="Poppi et al. 2021", value_range=UNIT),
    MetricSpec("adcc", recompute.adcc, True, needs_method=True, paper="Poppi et al. 2021", value_range=UNIT),
    MetricSpec("arcc", recompute.arcc, True, needs_method=True, paper="Domeniconi et al. 2026", value_range=UNIT),
    MetricSpec("max_sensitivity", recompute.max_sensitivity, False, needs_method=True, paper="Yeh et al. 2019"),
    MetricSpec("pointing_game", localisation.pointing_game, True, kind="mask", paper="Zhang et al. 2016",
               value_range=UNIT),
    MetricSpec("energy_pointing_game", localisation.energy_pointing_game, True, kind="mask", paper="Wang et al. 2020",
               value_range=UNIT),
    MetricSpec("sparseness", localisation.sparseness, True, kind="map", paper="Chalasani et al. 2020",
               value_range=UNIT),
):  # fmt: skip
    register_metric(_spec)


def available_metrics() -> list[str]:
    """Every registered metric name.

    Example:
        >>> "deletion" in available_metrics(), METRICS["deletion"].higher_is_better
        (True, False)
    """
    return list(METRICS)


def get_metric(name: str) -> MetricSpec:
    """The spec of ``name``, or a ValueError naming the closest metrics."""
    if name not in METRICS:
        from camlens.layers import closest_names

        closest = closest_names(name, list(METRICS), 2)
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)} (closest: {closest})")
    return METRICS[name]
