"""LeGrad (Bousselham et al. 2024) for vision transformers: gradients at every block's attention map.

timm and torchvision ViTs compute attention with the fused ``F.scaled_dot_product_attention`` (or
``nn.MultiheadAttention``), which never materialises the attention probabilities;
:class:`camlens.methods.attention.ExplicitAttention` computes each such call explicitly for one forward
and keeps the probabilities, so their gradient can be taken. No module is changed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camlens.methods.attention import ExplicitAttention, checked_attention
from camlens.methods.context import MethodContext
from camlens.targets import target_scores


def legrad(context: MethodContext) -> Tensor:
    """LeGrad (Bousselham et al. 2024, arXiv:2404.03214, Eq. 5-7) on the final score, for ViTs.

    For every attention block ``l`` with probabilities ``P_l`` ``(B, heads, N, N)``:
    ``E_l = mean_{heads, queries} ReLU(dS/dP_l)``, a relevance per key token; the map is
    ``mean_l E_l`` on the patch tokens (prefix tokens dropped), laid on the patch grid. One forward and
    one backward. The paper differentiates, per layer, the score its intermediate class token would get
    from the final norm and head (a logit lens); here every layer is differentiated against the
    model's own output score, as the issue defines it (and as the paper's last-layer term). A model
    without such attention, or whose blocks attend over different token sets (windowed, spatially reduced
    or multi-scale attention: Swin, PVT, MobileViT, CoAtNet, TinyViT), raises a ``ValueError`` naming why.
    """
    model, x = context.model, context.x.detach()
    mode = ExplicitAttention()
    with torch.inference_mode(False), torch.enable_grad():
        with mode:
            output = context.run(lambda: model(x))
        grid, prefix = checked_attention("legrad", model, x, mode.probabilities)
        targets = context.capture.classes if context.capture.classes is not None else context.targets
        scores = target_scores(output, targets, x.shape[0]).scores
        grads = torch.autograd.grad(scores.sum(), mode.probabilities, allow_unused=True)
    relevance = []
    for probabilities, grad in zip(mode.probabilities, grads, strict=True):
        if grad is None:
            grad = torch.zeros_like(probabilities)
        relevance.append(torch.relu(grad).mean(dim=(1, 2)))  # (B, N keys)
    mean = torch.stack(relevance).mean(dim=0)
    return mean[:, prefix:].reshape(x.shape[0], *grid).detach()
