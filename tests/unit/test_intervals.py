"""evaluate's intervals: a percentile bootstrap of the mean (1000 resamples, seed 0) clipped to the metric's
range, and none below 5 images ("n too small", null in JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from camlens.metrics import summarise, to_markdown
from camlens.metrics.evaluate import bootstrap_interval
from camlens.metrics.registry import METRICS


def _rows(metric: str, values, method: str = "gradcam") -> list[dict]:
    better = METRICS[metric].higher_is_better if metric in METRICS else True
    return [{"method": method, "metric": metric, "image": i, "value": v, "higher_is_better": better}
            for i, v in enumerate(values)]  # fmt: skip


def _numpy_percentile_bootstrap(values, resamples=1000, seed=0):
    """The textbook percentile bootstrap, written out independently of camlens."""
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        means[b] = data[rng.integers(0, len(data), size=len(data))].mean()
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_fewer_than_five_images_have_no_interval(n):
    values = [0.257 + 0.3 * (-1) ** i for i in range(n)]
    cell = summarise(_rows("deletion", values))[0]
    assert cell["ci_low"] is None and cell["ci_high"] is None and cell["n"] == n
    assert cell["mean"] == pytest.approx(sum(values) / n)
    table = to_markdown([cell])
    assert f"{cell['mean']:.3f} (n too small)" in table and "[" not in table.splitlines()[-1]
    assert json.loads(json.dumps({"summary": [cell]}))["summary"][0]["ci_low"] is None  # null in JSON
    assert bootstrap_interval(values) is None


def test_two_photos_no_longer_give_an_interval_wider_than_the_range():
    # the reported case: two photos' deletion AUCs gave 0.257 [-1.234, 1.747] (Student t, df = 1)
    cell = summarise(_rows("deletion", [0.140, 0.374]))[0]
    assert cell["ci_low"] is None and "n too small" in to_markdown([cell])


@pytest.mark.parametrize("seed_values", [0, 1, 2])
def test_five_or_more_is_the_percentile_bootstrap_within_the_range(seed_values):
    values = np.random.default_rng(100 + seed_values).uniform(0.05, 0.6, size=5 + 3 * seed_values).tolist()
    cell = summarise(_rows("deletion", values))[0]
    low, high = _numpy_percentile_bootstrap(values)
    assert cell["ci_low"] == pytest.approx(low, abs=1e-12) and cell["ci_high"] == pytest.approx(high, abs=1e-12)
    assert 0.0 <= cell["ci_low"] <= cell["mean"] <= cell["ci_high"] <= 1.0
    assert f"{cell['mean']:.3f} [{low:.3f}, {high:.3f}]" in to_markdown([cell])
    assert summarise(_rows("deletion", values))[0] == cell  # fixed seed: the same interval every time


def test_interval_beyond_the_range_is_clipped():
    # AUCs a hair above 1 (rounding in the trapezoid) and above 0.5 for ROAD combined: both clipped
    values = [1.0, 1.0 + 1e-6, 1.0 + 2e-6, 0.999, 1.0 + 3e-6, 1.0]
    unclipped = _numpy_percentile_bootstrap(values)
    assert unclipped[1] > 1.0
    cell = summarise(_rows("insertion", values))[0]
    assert cell["ci_high"] == 1.0 and cell["ci_low"] == pytest.approx(unclipped[0], abs=1e-12)
    road = summarise(_rows("road", [0.49, 0.55, 0.6, 0.52, 0.58]))[0]
    assert road["ci_high"] == 0.5 and road["ci_low"] == 0.5  # the whole bootstrap lies above 0.5
    assert bootstrap_interval([-2.0, -1.0, 0.0, 1.0, 2.0], (-1.0, 1.0)) == (
        max(-1.0, _numpy_percentile_bootstrap([-2.0, -1.0, 0.0, 1.0, 2.0])[0]),
        min(1.0, _numpy_percentile_bootstrap([-2.0, -1.0, 0.0, 1.0, 2.0])[1]),
    )


def test_unbounded_metrics_and_logit_scores_are_not_clipped():
    values = [-3.0, 5.0, 12.0, 40.0, 7.0, 9.0]
    low, high = _numpy_percentile_bootstrap(values)
    cell = summarise(_rows("max_sensitivity", values))[0]
    assert (cell["ci_low"], cell["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    logit = summarise(_rows("deletion", values), options={"deletion": {"score": "logit"}})[0]
    assert logit["ci_high"] == pytest.approx(high) and high > 1.0
    assert summarise(_rows("unregistered", values))[0]["ci_high"] == pytest.approx(high)


def test_nan_values_are_skipped_before_counting():
    values = [0.2, float("nan"), 0.3, 0.4, 0.5, float("nan")]
    cell = summarise(_rows("energy_pointing_game", values))[0]
    assert cell["n"] == 4 and cell["ci_low"] is None
    cell = summarise(_rows("energy_pointing_game", [*values, 0.6]))[0]
    low, high = _numpy_percentile_bootstrap([0.2, 0.3, 0.4, 0.5, 0.6])
    assert cell["n"] == 5 and (cell["ci_low"], cell["ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_every_registered_metric_states_its_range():
    bounded = {name for name, spec in METRICS.items() if spec.value_range is not None}
    assert bounded == set(METRICS) - {"max_sensitivity"}
    assert METRICS["deletion"].range_for() == (0.0, 1.0) and METRICS["average_drop"].range_for() == (0.0, 100.0)
    assert METRICS["road"].range_for() == (-0.5, 0.5) and METRICS["road"].range_for({"score": "logit"}) is None
