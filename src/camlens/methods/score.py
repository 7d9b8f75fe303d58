"""Perturbation methods: Score-CAM and its smoothed/integrated variants, Ablation-CAM, Smooth Grad-CAM++.

They re-run the model on perturbed copies, in chunks of ``batch_size`` copies, so that peak memory is
bounded by ``batch_size`` and not by the channel count. Channels whose map is constant are skipped
(Score-CAM's min-max mask is undefined there; an all-zero channel's ablation changes nothing).

Ablation-CAM perturbs the target layer's *output*, so only the part of the network after the layer
depends on the perturbation. :func:`layer_tail_scores` runs only that part, in the first of three ways
that works:

1. ``"tail"``: the graph cut after the layer (:func:`camlens.methods.tail.layer_tail`, ``torch.fx``),
   fed the chunk of perturbed activations ``(n, K, u, v)`` directly: nothing before the layer runs again;
2. ``"hook"``: the model run on one image while the layer's forward hook replaces its output by the
   whole chunk: the part before the layer runs once per chunk on one image, the part after it on ``n``
   copies;
3. ``"full"``: where neither reproduces the unperturbed score (an error, an output of the wrong size,
   a different score), full forwards of ``n`` copies of the image with the hook substituting the
   activations.

No module is replaced; hooks live for one call and are removed in ``finally``; everything runs under
``torch.no_grad``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from camlens.methods.context import MethodContext
from camlens.methods.gradcam import weighted_sum
from camlens.methods.tail import layer_tail
from camlens.postprocess import resize
from camlens.progress import Counter


def _chunks(count: int, size: int) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _varies(maps: Tensor) -> Tensor:
    """``(B, K)`` True where channel k's map is not constant."""
    flat = maps.flatten(2)
    return flat.amax(dim=2) > flat.amin(dim=2)


class _Substitute:
    """Forward hook replacing the layer's output by ``replacement`` (one call only)."""

    def __init__(self) -> None:
        self.replacement: Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        return self.replacement


def _run_with(model: nn.Module, module: nn.Module, x: Tensor, replacement: Tensor) -> Any:
    hook = _Substitute()
    hook.replacement = replacement
    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), torch.no_grad():
            return model(x)
    finally:
        handle.remove()


def _close(score: Tensor, reference: Tensor) -> bool:
    reference = reference.to(score.dtype)
    return bool(torch.isclose(score, reference, rtol=1e-4, atol=1e-5 * (1 + float(reference.abs()))))


def layer_tail_scores(
    context: MethodContext,
    image: int,
    variants: Tensor,
    check: bool = True,
    how: str | None = None,
    unperturbed: Tensor | None = None,
) -> tuple[Tensor, str]:
    """Scores of ``variants`` ``(n, K, u, v)`` of image ``image``'s target-layer output.

    Returns the ``(n,)`` scores and how they were computed: ``"tail"``, ``"hook"`` or ``"full"`` (see
    the module's docstring). With ``check``, the unperturbed activations ride along as an extra row:
    their score must equal the captured score, else the next way is tried. ``how`` (the answer of an
    earlier, checked call on the same image) skips the ways that failed there. ``variants`` are in the
    layer's own layout; ``unperturbed`` is the image's own output of the layer ``(1, ...)`` (default:
    the captured activations, which are that output for a channels-first layer).
    """
    x = context.x[image : image + 1].detach()
    rows = variants
    if check:
        own = context.activations[image : image + 1] if unperturbed is None else unperturbed
        rows = torch.cat([variants, own.to(variants.dtype)])
    n = rows.shape[0]
    index = torch.full((n,), image, dtype=torch.long, device=x.device)
    reference = context.capture.scores[image]
    assert context.layer is not None
    runs: list[tuple[str, Callable[[], Any]]] = [("hook", lambda: _run_with(context.model, context.module, x, rows))]
    tail = layer_tail(context.model, context.layer[0]) if how in (None, "tail") else None
    if tail is not None:
        runs.insert(0, ("tail", lambda: _run_tail(tail, rows)))
    if how is not None:
        runs = [(way, run) for way, run in runs if way == how]
    for way, run in runs:
        try:
            scores = context.scores_of(context.run(run), index)
        except (RuntimeError, ValueError, IndexError, TypeError):
            continue
        if scores.shape == (n,) and (not check or _close(scores[-1], reference)):
            return scores[: variants.shape[0]], way
    # the tail needs its input batch: n full forwards, the hook substituting the activations
    m = variants.shape[0]
    full = context.scores_of(
        context.run(lambda: _run_with(context.model, context.module, x.expand(m, *x.shape[1:]), variants)), index[:m]
    )
    return full, "full"


def _layer_outputs(context: MethodContext) -> Tensor:
    """The target layer's own output on the batch (one forward without gradients; the hook is removed)."""
    kept: dict[str, Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        kept["output"] = output.detach()

    handle = context.module.register_forward_hook(keep)
    try:
        with torch.inference_mode(False), torch.no_grad():
            context.model(context.x.detach())
    finally:
        handle.remove()
    return kept["output"]


def _run_tail(tail: nn.Module, activations: Tensor) -> Any:
    with torch.inference_mode(False), torch.no_grad():
        return tail(activations)


def ablationcam(context: MethodContext) -> Tensor:
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, Eq. 3): ``w_k = (S - S_k) / S``, ``S_k`` the score
    with channel ``k`` of the target layer's output set to 0; the map is ``sum_k w_k A_k``.

    Only the part of the network after the layer runs on the ablated copies (see
    :func:`layer_tail_scores`), ``batch_size`` copies at a time; all-zero channels are skipped (their
    ablation changes nothing: ``w_k = 0``). On a channels-last or token layer, channel ``k`` is zeroed
    in the layer's own layout (prefix tokens such as the class token are left as they are), after one
    more forward that records that output. pytorch-grad-cam sets a channel to a large negative value
    instead of 0 when the layer's minimum is not 0; here it is always 0, as in the paper.
    """
    activations = context.activations
    batch, channels = activations.shape[:2]
    weights = torch.zeros(batch, channels, dtype=activations.dtype, device=activations.device)
    active = activations.flatten(2).ne(0).any(dim=2)
    size = context.options.batch_size
    layout = context.capture.layout
    natives = None if layout is None or layout.kind == "nchw" else _layer_outputs(context)
    counter = Counter("ablationcam", int(active.sum()))
    for b in range(batch):
        score = context.capture.scores[b]
        channels_b = active[b].nonzero()[:, 0]
        how = None
        own = None if natives is None else natives[b : b + 1]
        for part in _chunks(len(channels_b), size):
            ks = channels_b[part]
            ablated = activations[b].expand(len(ks), *activations.shape[1:]).clone()
            ablated[torch.arange(len(ks)), ks] = 0
            if layout is not None and own is not None:
                ablated = layout.to_native(ablated, own)  # e.g. tokens: the class token kept, channel k zeroed
            scores, how = layer_tail_scores(context, b, ablated, check=how is None, how=how, unperturbed=own)
            denominator = score if score != 0 else torch.ones_like(score)
            weights[b, ks] = ((score - scores) / denominator).to(weights.dtype) * (score != 0)
            counter.advance(len(ks))
    return weighted_sum(weights, activations)


def _upsampled(context: MethodContext, image: int, channels: Tensor, normalise_first: bool) -> Tensor:
    """Per-channel min-max masks in [0, 1] at input size, ``(n, 1, H, W)`` (``(n, 1, T, H, W)`` for a clip or
    volume: trilinear), for one chunk of channels.

    ``normalise_first=False``: upsample, then normalise (the Score-CAM authors' code);
    ``True``: normalise at layer resolution, then upsample (torchcam).
    """
    maps = context.activations[image, channels][:, None]

    def normalise(m: Tensor) -> Tensor:
        shape = (-1,) + (1,) * (m.dim() - 1)
        low = m.flatten(1).amin(dim=1).view(shape)
        high = m.flatten(1).amax(dim=1).view(shape)
        if normalise_first:
            return (m - low) / (high - low + 1e-8)  # torchcam's normalisation
        return (m - low) / torch.where(high > low, high - low, torch.ones_like(high))

    size = tuple(int(s) for s in context.x.shape[2:])
    if normalise_first:
        return resize(normalise(maps), size)
    return normalise(resize(maps, size))


def _masked_scores(
    context: MethodContext,
    channels: Tensor,
    image: int,
    masks: Callable[[Tensor], Tensor],
    probability: bool,
    counter: Counter | None = None,
) -> Tensor:
    """Scores of image ``image`` times ``masks(chunk of channels)`` for each channel in ``channels``."""
    x = context.x[image : image + 1].detach()
    scores = []
    for part in _chunks(len(channels), context.options.batch_size):
        chunk = masks(channels[part]).to(x.dtype) * x
        with torch.inference_mode(False), torch.no_grad():
            output = context.run(functools.partial(context.model, chunk))
        rows = torch.full((chunk.shape[0],), image, dtype=torch.long, device=x.device)
        scores.append(context.probabilities_of(output, rows) if probability else context.scores_of(output, rows))
        if counter is not None:
            counter.advance(chunk.shape[0])
    return torch.cat(scores) if scores else x.new_zeros(0)


def scorecam(context: MethodContext) -> Tensor:
    """Score-CAM (Wang et al., CVPR-W 2020), the authors' variant: ``w_k = softmax(f(X * n(up(A_k))))_c``.

    ``up`` is bilinear upsampling to the input size, ``n`` per-channel min-max to [0, 1]; constant
    channels are skipped (weight 0), as in the authors' code. The map is ``sum_k w_k A_k`` (upsampling
    is linear, so this equals the authors' ``sum_k w_k up(A_k)`` upsampled). With a callable target,
    ``w_k`` is its score (no softmax). Masks are made ``batch_size`` channels at a time.

    Peers differ: pytorch-grad-cam softmaxes the masked *logits* over channels, torchcam softmaxes
    ``logit(M_k) - logit(X)`` over channels (and normalises before upsampling); their maps are another
    method (correlation about 0.8 with this one on resnet18).
    """
    activations = context.activations
    varies = _varies(activations)
    weights = torch.zeros(activations.shape[:2], dtype=activations.dtype, device=activations.device)
    counter = Counter("scorecam", int(varies.sum()))
    for b in range(activations.shape[0]):
        channels = varies[b].nonzero()[:, 0]
        masks = lambda ks, b=b: _upsampled(context, b, ks, normalise_first=False)  # noqa: E731
        weights[b, channels] = _masked_scores(context, channels, b, masks, True, counter).to(weights.dtype)
    return weighted_sum(weights, activations)


def _torchcam_score_weights(
    context: MethodContext, samples: int, transform: Callable[[int, Tensor], Tensor], label: str
) -> Tensor:
    """``softmax_k(mean_i (Y_c(transform(i, M_k) * X) - Y_c(X)))`` as torchcam's SS-CAM / IS-CAM."""
    activations = context.activations
    batch, channels = activations.shape[:2]
    total = torch.zeros(batch, channels, dtype=torch.float64, device=activations.device)
    every = torch.arange(channels, device=activations.device)
    counter = Counter(label, samples * batch * channels)
    for i in range(samples):
        for b in range(batch):
            masks = lambda ks, b=b, i=i: transform(i, _upsampled(context, b, ks, normalise_first=True))  # noqa: E731
            scores = _masked_scores(context, every, b, masks, False, counter)
            total[b] += (scores - context.capture.scores[b]).to(torch.float64)
    return torch.softmax(total / samples, dim=1).to(activations.dtype)


def sscam(context: MethodContext) -> Tensor:
    """SS-CAM (Wang et al. 2020, arXiv:2006.14255), as torchcam's ``SSCAM``.

    ``w_k = softmax_k(1/N sum_i (Y_c((M_k + delta_i) * X) - Y_c(X)))`` with ``M_k`` the per-channel
    min-max normalised map upsampled to the input, ``delta_i ~ N(0, sigma^2)`` (``sigma = 2``, ``N = 35``
    by default; ``noise_std``, ``num_samples``, ``seed`` set them) and ``Y_c`` the pre-softmax score.
    The paper averages softmax probabilities instead; torchcam's form is kept for comparability.
    """
    options = context.options
    samples = options.num_samples or 35
    std = 2.0 if options.noise_std is None else options.noise_std
    generator = options.generator(context.x.device)

    def noisy(_i: int, masks: Tensor) -> Tensor:
        noise = torch.randn(masks.shape, generator=generator, device=masks.device, dtype=masks.dtype)
        return masks + std * noise

    return weighted_sum(_torchcam_score_weights(context, samples, noisy, "sscam"), context.activations)


def iscam(context: MethodContext) -> Tensor:
    """IS-CAM (Naidu et al. 2020, arXiv:2010.03023), as torchcam's ``ISCAM``.

    ``w_k = softmax_k(1/N sum_{i=1..N} (Y_c(c_i M_k X) - Y_c(X)))`` with ``c_i = sum_{j<=i} j/N`` (the
    cumulative integration coefficient of torchcam's loop), ``N = 10`` by default.
    """
    samples = context.options.num_samples or 10
    coefficients = torch.cumsum(torch.arange(1, samples + 1, dtype=torch.float64) / samples, 0).tolist()
    weights = _torchcam_score_weights(context, samples, lambda i, masks: coefficients[i] * masks, "iscam")
    return weighted_sum(weights, context.activations)


def smooth_gradcam_plus_plus(context: MethodContext) -> Tensor:
    """Smooth Grad-CAM++ (Omeiza et al. 2019, Eq. 9-10): Grad-CAM++ with SmoothGrad derivatives.

    The first, second and third powers of the gradient are averaged over ``N`` (4) noisy copies of
    the input (``x + N(0, sigma^2)``, ``sigma = 0.3``), each from one engine capture, and put in
    Grad-CAM++'s closed form with the activations ``A`` of the clean input:
    ``alpha = D2 / (2 D2 + sum_ab A_kab D3)``, ``w_k = sum_ij alpha ReLU(D1)``.
    torchcam uses the last sample's gradient for ``ReLU(D1)`` and ``sum_ab A D3`` in the denominator.
    """
    from camlens.engine import capture

    options = context.options
    samples = options.num_samples or 4
    std = 0.3 if options.noise_std is None else options.noise_std
    generator = options.generator(context.x.device)
    classes = context.capture.classes
    targets = context.targets if classes is None else classes
    d1 = d2 = d3 = torch.zeros_like(context.activations)
    counter = Counter("smoothgradcam++", samples * context.x.shape[0])
    for _ in range(samples):
        noise = torch.randn(context.x.shape, generator=generator, device=context.x.device, dtype=context.x.dtype)
        cap = capture(
            context.model, context.x.detach() + std * noise, targets, context.layer, layout=context.layout_spec
        )
        g = cap.gradients
        assert g is not None
        counter.advance(context.x.shape[0])
        d1, d2, d3 = (
            (g if d1 is None else d1 + g),
            (g**2 if d2 is None else d2 + g**2),
            (g**3 if d3 is None else d3 + g**3),
        )
    assert d1 is not None and d2 is not None and d3 is not None
    d1, d2, d3 = d1 / samples, d2 / samples, d3 / samples
    positions = tuple(range(2, context.activations.dim()))  # (u, v), or a clip's (t, u, v)
    denominator = 2 * d2 + context.activations.sum(dim=positions, keepdim=True) * d3
    nonzero = denominator != 0
    alpha = torch.where(nonzero, d2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), 0.0)
    weights = (alpha * torch.relu(d1)).sum(dim=positions)
    return weighted_sum(weights, context.activations)


__all__ = ["ablationcam", "iscam", "layer_tail_scores", "scorecam", "smooth_gradcam_plus_plus", "sscam"]
