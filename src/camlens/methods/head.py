"""CAM methods that need the classifier: ``cam``, ``finercam``, ``shapleycam``.

``cam`` reads the weights of the linear classifier after global average pooling; ``finercam`` and
``shapleycam`` differentiate more than the target score on the graph the engine recorded for Grad-CAM
(a ``head`` callable, run before that graph is freed), so they cost one extra backward through the
part of the network after the target layer, not another forward.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from camlens.methods.context import MethodContext, MethodOptions
from camlens.methods.gradcam import weighted_sum
from camlens.targets import Targets, TargetScores, forward_logits, logits_of

_classifier_cache: weakref.WeakKeyDictionary[nn.Module, dict[str, str]] = weakref.WeakKeyDictionary()


def find_classifier(model: nn.Module, x: Tensor, layer: tuple[str, nn.Module]) -> nn.Linear:
    """The ``nn.Linear`` classifier applied to the global average pool of ``layer``'s output.

    Found by one traced forward of one image (hooks removed in ``finally``): the linear layer whose
    input equals ``mean_ij A_kij`` and whose output equals the model's logits.

    Raises:
        ValueError: no such layer (another head: fully connected layers on the flattened map, max
            pooling, an MLP); the message says to use ``gradcam``, its generalisation.
    """
    name, module = layer
    cache = _classifier_cache.setdefault(model, {})
    modules = dict(model.named_modules())
    if name in cache and cache[name] in modules:
        return modules[cache[name]]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    seen: dict[str, Any] = {}

    def keep_layer(_m: nn.Module, _i: Any, output: Any) -> None:
        seen["A"] = output

    def keep_linear(key: str) -> Any:
        def hook(_m: nn.Module, inputs: Any, output: Any) -> None:
            seen[key] = (inputs[0] if inputs else None, output)

        return hook

    handles = [module.register_forward_hook(keep_layer)]
    handles += [m.register_forward_hook(keep_linear(n)) for n, m in linears]
    try:
        with torch.inference_mode(False), torch.no_grad():
            output = forward_logits(lambda: model(x[:1].detach()))  # the logits before a final sigmoid
    finally:
        for handle in handles:
            handle.remove()
    logits = logits_of(output)
    activations = seen.get("A")
    found = None
    if isinstance(activations, Tensor) and activations.dim() in (4, 5) and logits is not None:
        pooled = activations.flatten(2).mean(dim=2)  # (B, K, u, v) or a clip's (B, K, t, u, v)
        for n, _ in linears:
            if n not in seen:
                continue
            inputs, out = seen[n]
            if (
                isinstance(inputs, Tensor)
                and inputs.shape == pooled.shape
                and torch.allclose(inputs, pooled, rtol=1e-4, atol=1e-6)
                and out.shape == logits.shape
                and torch.allclose(out, logits, rtol=1e-4, atol=1e-6)
            ):
                found = n
                break
    if found is None:
        raise ValueError(
            f"cam needs a classifier that is one nn.Linear on the global average pool of the target layer "
            f"{name!r}, and this model has none there: use 'gradcam' (which equals CAM up to a ReLU and a "
            "scale for such heads and generalises it to any head), or pick the layer whose pooled output "
            "feeds the classifier"
        )
    cache[name] = found
    return modules[found]


def cam(context: MethodContext) -> Tensor:
    """CAM (Zhou et al., CVPR 2016, Eq. 2): ``M_c = sum_k W_ck A_k`` with ``W`` the linear classifier
    applied after global average pooling of the target layer.

    Equals pre-ReLU Grad-CAM times ``u v`` at that layer. Needs class targets (an int, per-image
    classes or None); a model without a GAP-linear head raises a ``ValueError`` naming ``gradcam``.
    """
    if context.capture.classes is None:
        raise ValueError("cam explains classes: pass targets=None, an int or one class per image, not a callable")
    assert context.layer is not None
    linear = find_classifier(context.model, context.x, context.layer)
    weights = linear.weight.detach()[context.capture.classes.to(linear.weight.device)]
    return weighted_sum(weights.to(context.activations.dtype), context.activations)


def _spatial(context: MethodContext, native: Tensor) -> Tensor:
    """A head's derivative, taken on the layer's own output (tokens, channels-last...), as the ``(B, K, u, v)``
    maps the activations and gradients are (the layout's own conversion)."""
    layout = context.capture.layout
    return native if layout is None else layout.to_spatial(native)


def finer_head(options: MethodOptions, targets: Targets) -> Any:
    def head(output: Any, activations: Tensor, picked: TargetScores) -> dict[str, Tensor]:
        logits = picked.logits
        if logits is None or picked.classes is None:
            raise ValueError("finercam compares classes: it needs (batch, classes) logits and class targets")
        target = picked.classes
        target_logit = logits.gather(1, target[:, None])
        distance = (logits.detach() - target_logit.detach()).abs()
        distance.scatter_(1, target[:, None], float("inf"))  # the class itself is not a comparison
        count = min(options.finer_classes, logits.shape[1] - 1)
        if count < 1:
            raise ValueError("finercam needs a model with at least two classes")
        similar = distance.topk(count, dim=1, largest=False).indices
        probabilities = torch.softmax(logits, dim=1).gather(1, similar)
        compared = logits.gather(1, similar)
        finer = (probabilities * (target_logit - options.finer_alpha * compared)).sum(dim=1) / probabilities.sum(1)
        (gradient,) = torch.autograd.grad(finer.sum(), [activations], retain_graph=True)
        return {"finercam": gradient.detach(), "finercam_classes": similar}

    return head


def finercam(context: MethodContext) -> Tensor:
    """Finer-CAM (Zhang et al., CVPR 2025): Grad-CAM of the target score against its most similar classes.

    The explained score is ``S' = sum_j p_j (y_c - alpha y_j) / sum_j p_j`` over the ``finer_classes``
    (3) classes ``j`` whose logits are closest to ``y_c``, with ``p`` the softmax probabilities and
    ``alpha = 1`` (the authors' formulation as released in pytorch-grad-cam's ``FinerWeightedTarget``);
    the map is Grad-CAM's ``sum_k mean_ij(dS'/dA_kij) A_k``. Its gradient is taken on the graph
    recorded for Grad-CAM (no second forward). pytorch-grad-cam always compares against the classes
    nearest to the *predicted* class's logit; here the explained class (per-image targets) is used.
    """
    gradient = _spatial(context, context.capture.extras["finercam"])
    return weighted_sum(gradient.flatten(2).mean(dim=2), context.activations)


def shapley_head(options: MethodOptions, targets: Targets) -> Any:
    del options, targets

    def head(output: Any, activations: Tensor, picked: TargetScores) -> dict[str, Tensor]:
        (gradient,) = torch.autograd.grad(picked.scores.sum(), [activations], retain_graph=True, create_graph=True)
        if not gradient.requires_grad:  # the score is linear in A: the Hessian is 0
            return {"shapleycam_hvp": torch.zeros_like(activations).detach()}
        (hvp,) = torch.autograd.grad(
            gradient, [activations], grad_outputs=activations.detach(), retain_graph=True, allow_unused=True
        )
        return {"shapleycam_hvp": (torch.zeros_like(activations) if hvp is None else hvp).detach()}

    head.second_order = True  # type: ignore[attr-defined]
    return head


def shapleycam(context: MethodContext) -> Tensor:
    """ShapleyCAM (Cai 2024, arXiv:2501.06261, Eq. 12): ``w_k = mean_ij (g - 1/2 H A)_kij``.

    ``H A`` is the Hessian of the score with respect to ``A`` times ``A`` (a Hessian-vector product
    through the part of the network after the layer, on the recorded graph). For a head that is
    piecewise linear in ``A`` (GAP + linear, ReLU MLPs) the Hessian vanishes and ShapleyCAM equals
    Grad-CAM.
    """
    hvp = _spatial(context, context.capture.extras["shapleycam_hvp"])
    weights = (context.gradients - 0.5 * hvp).flatten(2).mean(dim=2)
    return weighted_sum(weights, context.activations)
