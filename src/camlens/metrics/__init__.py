"""Which map can I trust? Faithfulness, localisation, complexity, robustness and sanity metrics.

Functional, batched, on the model's device, per-image values. Each model-based metric is called as
``metric(model, x, maps, targets=None, **options)`` with ``maps`` ``(B, H, W)`` and returns a
:class:`MetricResult` (``.values`` ``(B,)``, ``.curve`` where there is one, ``.higher_is_better``).
``METRICS`` holds every metric's spec (function, direction, what it needs).

>>> import camlens.metrics as cm
>>> cm.METRICS["insertion"].higher_is_better, cm.METRICS["deletion"].higher_is_better
(True, False)
"""

from camlens.metrics._common import MetricResult as MetricResult
from camlens.metrics._common import saliency_2d as saliency_2d
from camlens.metrics.detection import box_deletion as box_deletion
from camlens.metrics.detection import box_energy as box_energy
from camlens.metrics.detection import box_insertion as box_insertion
from camlens.metrics.detection import box_pointing_game as box_pointing_game
from camlens.metrics.evaluate import evaluate as evaluate
from camlens.metrics.evaluate import mean_ci as mean_ci
from camlens.metrics.evaluate import summarise as summarise
from camlens.metrics.evaluate import to_markdown as to_markdown
from camlens.metrics.localisation import boxes_to_masks as boxes_to_masks
from camlens.metrics.localisation import energy_pointing_game as energy_pointing_game
from camlens.metrics.localisation import pointing_game as pointing_game
from camlens.metrics.localisation import sparseness as sparseness
from camlens.metrics.perturbation import average_drop as average_drop
from camlens.metrics.perturbation import average_gain as average_gain
from camlens.metrics.perturbation import deletion as deletion
from camlens.metrics.perturbation import gaussian_blur as gaussian_blur
from camlens.metrics.perturbation import increase_in_confidence as increase_in_confidence
from camlens.metrics.perturbation import insertion as insertion
from camlens.metrics.plot import plot_curves as plot_curves
from camlens.metrics.plot import plot_sanity as plot_sanity
from camlens.metrics.recompute import adcc as adcc
from camlens.metrics.recompute import arcc as arcc
from camlens.metrics.recompute import coherency as coherency
from camlens.metrics.recompute import complexity as complexity
from camlens.metrics.recompute import max_sensitivity as max_sensitivity
from camlens.metrics.registry import METRICS as METRICS
from camlens.metrics.registry import MetricSpec as MetricSpec
from camlens.metrics.registry import available_metrics as available_metrics
from camlens.metrics.registry import get_metric as get_metric
from camlens.metrics.registry import register_metric as register_metric
from camlens.metrics.road import noisy_linear_impute as noisy_linear_impute
from camlens.metrics.road import road as road
from camlens.metrics.sanity import sanity_check as sanity_check
from camlens.metrics.sanity import spearman as spearman
from camlens.metrics.sanity import ssim as ssim
from camlens.metrics.segmentation import class_deletion as class_deletion
from camlens.metrics.segmentation import class_energy as class_energy
from camlens.metrics.segmentation import class_insertion as class_insertion
from camlens.metrics.segmentation import class_pointing_game as class_pointing_game

__all__ = [
    "METRICS",
    "MetricResult",
    "MetricSpec",
    "adcc",
    "arcc",
    "available_metrics",
    "average_drop",
    "average_gain",
    "box_deletion",
    "box_energy",
    "box_insertion",
    "box_pointing_game",
    "boxes_to_masks",
    "class_deletion",
    "class_energy",
    "class_insertion",
    "class_pointing_game",
    "coherency",
    "complexity",
    "deletion",
    "energy_pointing_game",
    "evaluate",
    "gaussian_blur",
    "get_metric",
    "increase_in_confidence",
    "insertion",
    "max_sensitivity",
    "mean_ci",
    "noisy_linear_impute",
    "plot_curves",
    "plot_sanity",
    "pointing_game",
    "register_metric",
    "road",
    "saliency_2d",
    "sanity_check",
    "sparseness",
    "spearman",
    "ssim",
    "summarise",
    "to_markdown",
]
