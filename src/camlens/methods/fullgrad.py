"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): input-gradient x input plus every layer's bias-gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.methods.context import MethodContext
from camlens.targets import target_scores


def effective_bias(module: nn.Module) -> Tensor | None:
    """The bias a module adds to each output channel: a conv's bias, or an eval-mode batch norm's
    ``beta - running_mean * gamma / sqrt(running_var + eps)``; None for other modules."""
    if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
        return module.bias.detach()
    if isinstance(module, nn.BatchNorm2d) and not module.training and module.track_running_stats:
        assert module.running_mean is not None and module.running_var is not None
        gamma = module.weight.detach() if module.weight is not None else torch.ones_like(module.running_mean)
        beta = module.bias.detach() if module.bias is not None else torch.zeros_like(module.running_mean)
        return beta - module.running_mean * gamma / torch.sqrt(module.running_var + module.eps)
    return None


def _post_process(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """The authors' ``psi``: absolute value, per-image min-max over all channels, resize, channel sum."""
    maps = maps.abs()
    flat = maps.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1, 1)
    high = flat.amax(dim=1).view(-1, 1, 1, 1)
    maps = (maps - low) / (high - low + 1e-6)
    if tuple(maps.shape[-2:]) != size:
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
    return maps.sum(dim=1)


def full_gradients(context: MethodContext) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
    """One forward and one backward: ``(S, dS/dx * x, [(dS/dz_l * b_l, b_l-shape)...])``.

    ``z_l`` is the output of each conv / linear / eval batch-norm module with a bias; the layer's own
    output is kept and a copy goes downstream (so in-place ops after it cannot overwrite it).
    """
    model, x = context.model, context.x.detach().clone().requires_grad_(True)
    outputs: list[tuple[Tensor, Tensor, bool]] = []

    def keep(bias: Tensor, last: bool) -> Any:
        def hook(_m: nn.Module, _i: Any, output: Any) -> Any:
            if isinstance(output, Tensor) and output.requires_grad:
                outputs.append((output, bias, last))
                return output.clone()
            return None

        return hook

    handles = []
    try:
        for module in model.modules():
            bias = effective_bias(module)
            if bias is not None:
                # a linear layer's bias runs along the last dimension (tokens, channels-last maps)
                handles.append(module.register_forward_hook(keep(bias, isinstance(module, nn.Linear))))
        with torch.inference_mode(False), torch.enable_grad():
            output = context.run(lambda: model(x))
            targets = context.capture.classes if context.capture.classes is not None else context.targets
            scores = target_scores(output, targets, x.shape[0]).scores
            grads = torch.autograd.grad(scores.sum(), [x, *[o for o, _, _ in outputs]], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    input_term = grads[0] * x.detach()
    bias_terms = []
    for (out, bias, last), grad in zip(outputs, grads[1:], strict=True):
        if grad is None:
            continue
        shape = [1] * (out.dim() - 1) + [-1] if last else [1, -1] + [1] * (out.dim() - 2)
        term = grad * bias.view(shape).to(grad.dtype)
        if last and term.dim() == 4:  # a linear layer on a channels-last map: read it channels-first
            term = term.permute(0, 3, 1, 2)
        bias_terms.append((term, out))
    return scores.detach(), input_term, bias_terms


def fullgrad(context: MethodContext) -> Tensor:
    """FullGrad (Srinivas & Fleuret, NeurIPS 2019, Eq. 6): ``psi(dS/dx * x) + sum_l sum_c psi(dS/dz_l * b_l)``.

    One forward and one backward give the input-gradient and the gradient at the output of every layer
    with a bias (convolutions, linear layers, batch norms in eval mode with their effective bias); the
    spatial ``(B, C, h, w)`` terms are post-processed by the authors' ``psi`` (absolute value, per-image
    min-max, bilinear resize with ``align_corners=True``) and summed over channels and layers. The full
    gradients are complete: ``sum(dS/dx * x) + sum_l sum(dS/dz_l * b_l) = S`` for a ReLU network.
    Layer-free: ``target_layer`` is not used. pytorch-grad-cam's ``FullGrad`` collects only the
    batch-norm biases and post-processes the same way.
    """
    size = (int(context.x.shape[-2]), int(context.x.shape[-1]))
    _, input_term, bias_terms = full_gradients(context)
    saliency = _post_process(input_term, size)
    for term, _ in bias_terms:
        if term.dim() == 4 and term.shape[0] == input_term.shape[0]:  # spatial maps, not window-partitioned
            saliency = saliency + _post_process(term, size)
    return saliency
