"""``explain``: every requested method from one capture, and the per-method classes built on it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from camlens.capture import Capture, capture, check_input
from camlens.device import capture_in_float32, mixed_precision
from camlens.layers import LayerSpec, closest_names, default_layer, resolve_layer
from camlens.methods.cam import CAM_METHODS
from camlens.names import GUIDED_BACKPROP as GUIDED_BACKPROP
from camlens.names import GUIDED_GRADCAM as GUIDED_GRADCAM
from camlens.names import SEED_METHODS as SEED_METHODS
from camlens.postprocess import cam_to_image
from camlens.targets import Targets


def available_methods() -> list[str]:
    """Every method name ``explain`` accepts."""
    return [*CAM_METHODS, GUIDED_BACKPROP, GUIDED_GRADCAM]


@dataclass(frozen=True)
class Explanation(Mapping[str, Tensor]):
    """The maps of one ``explain`` call, by method name, with what produced them.

    ``result["gradcam"]`` is ``(B, H, W)`` in [0, 1]; ``result["guided_backprop"]`` and
    ``result["guided_gradcam"]`` are ``(B, C, H, W)``. ``raw[name]`` is the signed layer-resolution map
    ``sum_k w_k A_k`` before the ReLU, for each CAM method.
    """

    maps: dict[str, Tensor]
    raw: dict[str, Tensor]
    logits: Tensor | None
    scores: Tensor
    classes: Tensor | None
    target_layer: str | None
    counterfactual: bool = False
    capture: Capture | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, name: str) -> Tensor:
        return self.maps[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    def overlay(self, images: Any, method: str | None = None, colormap: str = "jet", alpha: float = 0.5) -> list:
        """The explained images (paths, PIL images or arrays) with ``method``'s map over each, as uint8 arrays
        at the images' own sizes (see :func:`camlens.render.overlays`)."""
        from camlens.render import overlays

        return overlays(self, images, method, colormap, alpha)

    def save(self, folder: Any, images: Any, **options: Any) -> list:
        """Write every method's pictures for the explained images to ``folder``, annotated with the class,
        probability and method (see :func:`camlens.render.save_result` for ``options``)."""
        from camlens.render import save_result

        return save_result(self, folder, images, **options)


def _check_methods(methods: Sequence[str] | str) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    names = list(dict.fromkeys(methods))
    known = available_methods()
    for name in names:
        if name not in known:
            raise ValueError(
                f"unknown method {name!r}; known: {', '.join(known)} (closest: {closest_names(name, known, 2)})"
            )
    if not names:
        raise ValueError(f"methods is empty; pick from {', '.join(known)}")
    return names


def explain(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str] | str = SEED_METHODS,
    target_layer: LayerSpec = None,
    targets: Targets = None,
    *,
    counterfactual: bool = False,
    precision: str = "float32",
) -> Explanation:
    """Explain ``model``'s scores on ``x`` with several methods from one forward pass.

    Args:
        model: any ``nn.Module``; left exactly as found (mode, flags, hooks, ``.grad``, weights).
        x: images ``(B, C, H, W)``, already preprocessed as the model expects.
        methods: names from :func:`available_methods`.
        target_layer: a module or dotted name (``"layer4"``, ``"features.29"``); None picks the
            deepest spatial layer feeding the classifier's pooling (its name is in the result).
        targets: None (predicted class), an int, B ints, or a callable ``output -> (B,)`` scores.
        counterfactual: negate the gradients (Grad-CAM paper, section 3.3): regions that argue
            *against* the class.
        precision: ``"float32"`` (default), or ``"bfloat16"``/``"float16"`` to run the network under
            autocast (see :mod:`camlens.device`; check the maps with ``pick_precision`` first).

    Example:
        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18(num_classes=10).eval()
        >>> result = explain(model, torch.rand(2, 3, 64, 64), ["gradcam", "gradcam++"])
        >>> result.target_layer, result["gradcam"].shape
        ('layer4', torch.Size([2, 64, 64]))
    """
    names = _check_methods(methods)
    check_input(model, x)
    cam_names = [n for n in names if n in CAM_METHODS]
    needs_layer = bool(cam_names) or GUIDED_GRADCAM in names
    needs_guided = GUIDED_BACKPROP in names or GUIDED_GRADCAM in names
    layer = _layer_for(model, x, target_layer) if needs_layer else None
    with mixed_precision(x.device, precision):
        cap = capture(model, x, targets, layer, guided=needs_guided)
    if precision != "float32":
        cap = capture_in_float32(cap)
    return _assemble(cap, names, x.shape[-2:], counterfactual)


def _layer_for(model: nn.Module, x: Tensor, target_layer: LayerSpec) -> tuple[str, nn.Module]:
    if target_layer is None:
        return default_layer(model, x)
    return resolve_layer(model, target_layer)


def _assemble(cap: Capture, names: list[str], size: Any, counterfactual: bool) -> Explanation:
    size = (int(size[0]), int(size[1]))
    maps: dict[str, Tensor] = {}
    raw: dict[str, Tensor] = {}
    wanted_cams = [n for n in names if n in CAM_METHODS]
    if GUIDED_GRADCAM in names and "gradcam" not in wanted_cams:
        wanted_cams.append("gradcam")
    if wanted_cams:
        assert cap.activations is not None and cap.gradients is not None
        gradients = -cap.gradients if counterfactual else cap.gradients
        for name in wanted_cams:
            raw[name] = CAM_METHODS[name](cap.activations, gradients)
            maps[name] = cam_to_image(raw[name], size).to(cap.activations.dtype)
    if GUIDED_BACKPROP in names or GUIDED_GRADCAM in names:
        assert cap.input_gradient is not None
        maps[GUIDED_BACKPROP] = cap.input_gradient
        if GUIDED_GRADCAM in names:
            maps[GUIDED_GRADCAM] = cap.input_gradient * maps["gradcam"][:, None]
    ordered = {n: maps[n] for n in names}
    return Explanation(
        maps=ordered,
        raw=raw,
        logits=cap.logits,
        scores=cap.scores,
        classes=cap.classes,
        target_layer=cap.layer_name,
        counterfactual=counterfactual,
        capture=cap,
    )


class _Explainer:
    """One method as an object: ``method(model, target_layer)(x, targets) -> map``."""

    method: ClassVar[str]
    uses_layer: ClassVar[bool] = True

    def __init__(self, model: nn.Module, target_layer: LayerSpec = None, *, counterfactual: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.model = model
        self.counterfactual = counterfactual
        self._layer: tuple[str, nn.Module] | None = None
        if target_layer is not None:
            self._layer = resolve_layer(model, target_layer)

    @property
    def target_layer_name(self) -> str | None:
        """The explained layer's dotted name (known once resolved: at construction or first call)."""
        return None if self._layer is None else self._layer[0]

    def explain(self, x: Tensor, targets: Targets = None) -> Explanation:
        """The full result: the map, the raw signed layer map, logits, classes and layer name."""
        layer = self._layer[1] if self._layer else None
        result = explain(self.model, x, [self.method], layer, targets, counterfactual=self.counterfactual)
        if self._layer is None and result.target_layer is not None:
            self._layer = resolve_layer(self.model, result.target_layer)  # the automatic choice, kept
        return result

    def __call__(self, x: Tensor, targets: Targets = None) -> Tensor:
        return self.explain(x, targets)[self.method]

    def __repr__(self) -> str:
        layer = f", target_layer={self.target_layer_name!r}" if self.uses_layer else ""
        return f"{type(self).__name__}({type(self.model).__name__}{layer})"


class GradCAM(_Explainer):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean_ij(dS/dA_kij) A_k)``, ``(B, H, W)`` in [0, 1].

    Example:
        >>> import torch, torchvision
        >>> cam = GradCAM(torchvision.models.resnet18(num_classes=10).eval())
        >>> cam(torch.rand(1, 3, 64, 64), targets=3).shape
        torch.Size([1, 64, 64])
    """

    method = "gradcam"


class GradCAMPlusPlus(_Explainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19, safe division), ``(B, H, W)`` in [0, 1]."""

    method = "gradcam++"


class GuidedBackprop(_Explainer):
    """Guided backpropagation (Springenberg et al. 2015) at every ReLU the forward runs, ``(B, C, H, W)``."""

    method = GUIDED_BACKPROP
    uses_layer = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)


class GuidedGradCAM(_Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017, section 3.2): guided backprop times the Grad-CAM map."""

    method = GUIDED_GRADCAM
