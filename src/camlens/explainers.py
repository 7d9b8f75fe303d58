"""One class per method, named as the papers name them: ``ScoreCAM(model, "layer4")(x, targets)``.

Every class is a thin object over :func:`camlens.explain` with one method name; settings of the
methods (``batch_size``, ``num_samples``, ``noise_std``, ``seed``, ...) and ``eigen_smooth`` /
``aug_smooth`` are given at construction. ``explainer_class(name)`` returns the class of a name. The classes
are made from :mod:`camlens.catalog` (each row's ``class_name``); the four seeds' are in :mod:`camlens.explanation`.

Example:
    >>> import torch, torchvision
    >>> cam = XGradCAM(torchvision.models.resnet18(num_classes=10).eval(), "layer4")
    >>> cam(torch.rand(1, 3, 64, 64), targets=3).shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from camlens.catalog import ROWS, MethodRow
from camlens.explanation import (
    Explanation,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    _Explainer,
    explain,
)
from camlens.layers import LayerSpec
from camlens.targets import Targets


class _MethodExplainer(_Explainer):
    """An explainer that also carries the method's settings."""

    def __init__(
        self, model: nn.Module, target_layer: LayerSpec = None, *, counterfactual: bool = False, **settings: Any
    ) -> None:
        super().__init__(model, target_layer, counterfactual=counterfactual)
        self.settings = settings

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        layer = self._layer[1] if self._layer else None
        result = explain(
            self.model, x, [self.method], layer, targets, counterfactual=self.counterfactual, **self.settings
        )
        if self._layer is None and result.target_layer is not None and "+" not in result.target_layer:
            from camlens.layers import resolve_layer

            self._layer = resolve_layer(self.model, result.target_layer)
        return result


def _make(row: MethodRow) -> type[_MethodExplainer]:
    function = row.entry.replace(":", ".")
    doc = f"{row.description}: ``explain(model, x, [{row.name!r}])`` as an object; see :func:`{function}`."
    if row.fuse != "mean":
        doc += f" A list of target layers fuses the maps by their {row.fuse}."
    if not row.uses_layer:
        doc += " Layer-free."
    return type(
        row.class_name,
        (_MethodExplainer,),
        {"method": row.name, "uses_layer": row.uses_layer, "__doc__": doc, "__module__": __name__},
    )


_WRITTEN: dict[str, type[_Explainer]] = {  # the seeds' classes, written out in camlens.explain
    cls.method: cls for cls in (GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM)
}
_CLASSES: dict[str, type[_Explainer]] = {row.name: _WRITTEN.get(row.name) or _make(row) for row in ROWS}
_BY_CLASS_NAME = {cls.__name__: cls for cls in _CLASSES.values() if cls.__module__ == __name__}
globals().update(_BY_CLASS_NAME)  # XGradCAM, ScoreCAM, ... (one per catalog row; the seeds are in explain)
_RUN_TIME: dict[str, type[_Explainer]] = {}


def explainer_class(name: str) -> type[_Explainer]:
    """The class of method ``name`` (any name of :func:`camlens.available_methods`, run-time ones included)."""
    if name in _CLASSES:
        return _CLASSES[name]
    from camlens.explanation import available_methods

    if name not in available_methods():
        raise ValueError(f"no method named {name!r}")
    if name not in _RUN_TIME:  # registered at run time: a class made on first request
        _RUN_TIME[name] = type(
            f"Explainer[{name}]",
            (_MethodExplainer,),
            {"method": name, "__doc__": f"The run-time method {name!r} as an object.", "__module__": __name__},
        )
    return _RUN_TIME[name]


def __getattr__(name: str) -> type[_MethodExplainer]:
    """Only reached for names that are not here (the classes are in the module's globals); its return type
    tells type checkers what ``camlens.explainers.ScoreCAM`` and the other made classes are."""
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["explainer_class", *_BY_CLASS_NAME]
