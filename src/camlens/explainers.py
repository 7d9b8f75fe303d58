"""One class per method, named as the papers name them: ``ScoreCAM(model, "layer4")(x, targets)``.

Every class is a thin object over :func:`camlens.explain` with one method name; settings of the
methods (``batch_size``, ``num_samples``, ``noise_std``, ``seed``, ...) and ``eigen_smooth`` /
``aug_smooth`` are given at construction. ``explainer_class(name)`` returns the class of a name.

Example:
    >>> import torch, torchvision
    >>> cam = XGradCAM(torchvision.models.resnet18(num_classes=10).eval(), "layer4")
    >>> cam(torch.rand(1, 3, 64, 64), targets=3).shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from camlens.explain import Explanation, GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, _Explainer, explain
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


def _make(class_name: str, method: str, doc: str, uses_layer: bool = True) -> type[_MethodExplainer]:
    return type(
        class_name,
        (_MethodExplainer,),
        {"method": method, "uses_layer": uses_layer, "__doc__": doc, "__module__": __name__},
    )


XGradCAM = _make("XGradCAM", "xgradcam", "XGrad-CAM (Fu et al. 2020); see :func:`camlens.methods.gradient.xgradcam`.")
LayerCAM = _make("LayerCAM", "layercam", "LayerCAM (Jiang et al. 2021); a list of layers fuses them by max.")
HiResCAM = _make("HiResCAM", "hirescam", "HiResCAM (Draelos & Carin 2020): ``sum_k g_k A_k``.")
GradCAMElementWise = _make("GradCAMElementWise", "gradcam_elementwise", "Element-wise Grad-CAM: ``sum_k ReLU(g A)``.")
EigenCAM = _make("EigenCAM", "eigencam", "Eigen-CAM (Muhammad & Yeasin 2020), sign fixed.")
EigenGradCAM = _make("EigenGradCAM", "eigengradcam", "Eigen-Grad-CAM: first component of ``A * g``, sign fixed.")
KPCACAM = _make("KPCACAM", "kpcacam", "KPCA-CAM: kernel PCA (sigmoid kernel) of the activations.")
FEM = _make("FEM", "fem", "FEM (Fuad et al. 2020): gradient-free k-sigma channel weights.")
CAM = _make("CAM", "cam", "CAM (Zhou et al. 2016): classifier weights of a GAP -> linear head.")
FinerCAM = _make("FinerCAM", "finercam", "Finer-CAM (Zhang et al. 2025): score minus the most similar classes'.")
ShapleyCAM = _make("ShapleyCAM", "shapleycam", "ShapleyCAM (Cai 2024): gradient and Hessian-vector product.")
RefineCAM = _make("RefineCAM", "refinecam", "Refine-CAM (Domeniconi et al. 2026): product over a list of layers.")
ScoreCAM = _make("ScoreCAM", "scorecam", "Score-CAM (Wang et al. 2020), the authors' variant.")
SSCAM = _make("SSCAM", "sscam", "SS-CAM, as torchcam's Smoothed Score-CAM.")
ISCAM = _make("ISCAM", "iscam", "IS-CAM, as torchcam's Integrated Score-CAM.")
AblationCAM = _make("AblationCAM", "ablationcam", "Ablation-CAM (Desai & Ramaswamy 2020), re-running the layer tail.")
SmoothGradCAMPlusPlus = _make("SmoothGradCAMPlusPlus", "smoothgradcam++", "Smooth Grad-CAM++ (Omeiza et al. 2019).")
SESS = _make("SESS", "sess", "SESS (Tyagi et al. 2022): Grad-CAM over scales and sliding windows, fused.")
FullGrad = _make("FullGrad", "fullgrad", "FullGrad (Srinivas & Fleuret 2019); layer-free.", uses_layer=False)
LeGrad = _make("LeGrad", "legrad", "LeGrad (Bousselham et al. 2024) for ViTs; layer-free.", uses_layer=False)

_SEEDS: dict[str, type[_Explainer]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "guided_backprop": GuidedBackprop,
    "guided_gradcam": GuidedGradCAM,
}


def explainer_class(name: str) -> type[_Explainer]:
    """The class of method ``name`` (any name of :func:`camlens.available_methods`)."""
    if name in _SEEDS:
        return _SEEDS[name]
    for value in globals().values():
        if isinstance(value, type) and issubclass(value, _MethodExplainer) and getattr(value, "method", None) == name:
            return value
    raise ValueError(f"no method named {name!r}")
