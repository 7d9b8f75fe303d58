"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

Layers are re-initialised on a deep copy of the model (the user's model is never touched), from the
top (the classifier) down, cumulatively (``"cascading"``) or one at a time (``"independent"``), and
every method's map for the *original* classes is compared with the trained model's map by Spearman
rank correlation of ``|map|`` and of the signed map, SSIM and HOG similarity (Adebayo et al. section 3).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camlens.layers import LayerSpec, default_layer, resolve_layer
from camlens.metrics._common import check_choice, fixed_classes, pearson_rows
from camlens.postprocess import normalize_per_image
from camlens.targets import Targets

MODES = ("cascading", "independent")
MEASURES = ("spearman_abs", "spearman", "ssim", "hog")


def rank_average(values: Tensor) -> Tensor:
    """Ranks 1..n of each row, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    out = torch.empty_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        unique, inverse, counts = torch.unique(values[row], sorted=True, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        average = ends - (counts.double() - 1) / 2
        out[row] = average[inverse]
    return out


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps ``(B, ...)`` (average ranks for ties; 0 for a constant map).

    Example:
        >>> spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 30.0, 20.0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    return pearson_rows(rank_average(a.flatten(1).double().cpu()), rank_average(b.flatten(1).double().cpu()))


def ssim(a: Tensor, b: Tensor, *, window: int = 7, data_range: float = 1.0) -> Tensor:
    """Mean SSIM (Wang et al. 2004) of each pair of ``(B, H, W)`` maps, as ``skimage.metrics.structural_similarity``.

    Its defaults: a ``window x window`` uniform window, sample covariance, ``K1 = 0.01``, ``K2 = 0.03``,
    the mean over positions at least ``window // 2`` from the border.

    Example:
        >>> a = torch.rand(2, 16, 16); ssim(a, a)
        tensor([1., 1.], dtype=torch.float64)
    """
    a = a.double()[:, None]
    b = b.double()[:, None]
    if min(a.shape[-2:]) < window:
        raise ValueError(f"maps must be at least {window} x {window} for SSIM")
    mean = lambda t: F.avg_pool2d(t, window, stride=1)  # noqa: E731
    ux, uy = mean(a), mean(b)
    norm = window**2 / (window**2 - 1)
    vx = norm * (mean(a * a) - ux * ux)
    vy = norm * (mean(b * b) - uy * uy)
    vxy = norm * (mean(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).cpu()


def hog_similarity(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the HOG features (scikit-image ``hog``, its defaults) of each pair of maps.

    Needs scikit-image: ``pip install camlens[metrics]``.
    """
    try:
        from skimage.feature import hog
    except ImportError:
        raise ImportError(
            "HOG similarity needs scikit-image: pip install 'camlens[metrics]' (or leave 'hog' out of measures)"
        ) from None
    if min(a.shape[-2:]) < 24:
        raise ValueError("HOG needs maps of at least 24 x 24 pixels (8-pixel cells, 3 x 3 blocks)")
    features_a = [torch.from_numpy(hog(m.double().cpu().numpy())) for m in a]
    features_b = [torch.from_numpy(hog(m.double().cpu().numpy())) for m in b]
    return pearson_rows(torch.stack(features_a), torch.stack(features_b))


def _as_2d(maps: Tensor) -> Tensor:
    return maps.sum(dim=1) if maps.dim() == 4 else maps


def _parameterised_layers(model: nn.Module, x: Tensor) -> list[str]:
    """Modules holding parameters of their own, in the order the forward runs them, last first."""
    probe = copy.deepcopy(model)
    names = {id(m): n for n, m in probe.named_modules()}
    order: list[str] = []
    handles = []

    def record(module: nn.Module, _inputs: Any, _output: Any) -> None:
        name = names[id(module)]
        if name not in order:
            order.append(name)

    for module in probe.modules():
        if any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            probe(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return order[::-1]


INITS = ("redraw", "reset")


def randomise(module: nn.Module, generator_seed: int, init: str = "redraw") -> None:
    """Re-initialise every parameter inside ``module`` (a copy).

    ``"redraw"`` (default, scale-preserving, as Adebayo et al.'s truncated-normal re-draw): each
    parameter tensor gets ``mean + std * z`` with its own trained mean and standard deviation and ``z``
    a standard normal truncated to [-2, 2]; a single number or a constant tensor (e.g. a fresh norm's
    scale) is multiplied element-wise by draws from U(0.5, 1.5) (sign and order of magnitude kept).
    Buffers (batch-norm running statistics) are kept, so the activations keep their scale and deep
    layers stay alive.

    ``"reset"``: ``reset_parameters()`` where a module has it (PyTorch's default initialisation; norms
    also reset their running statistics), else the re-draw above. In networks with batch norm this
    often leaves every map below the randomised layer flat (all zero).
    """
    check_choice(init, "init", INITS)
    generator = torch.Generator().manual_seed(generator_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        with torch.no_grad():
            for sub in module.modules():
                own = list(sub.parameters(recurse=False))
                if not own:
                    continue
                reset = getattr(sub, "reset_parameters", None)
                if init == "reset" and callable(reset):
                    reset()
                    continue
                for p in own:
                    p.copy_(_redrawn(p.detach().cpu().double(), generator).to(p.dtype).to(p.device))


def _redrawn(p: Tensor, generator: torch.Generator) -> Tensor:
    if p.numel() == 1 or float(p.std()) == 0:  # a number, or a constant tensor: rescaled per element
        return p * (0.5 + torch.rand(p.shape, generator=generator, dtype=p.dtype))
    z = torch.randn(p.shape, generator=generator, dtype=p.dtype)
    while bool((z.abs() > 2).any()):  # truncate by redrawing the tails
        far = z.abs() > 2
        z[far] = torch.randn(int(far.sum()), generator=generator, dtype=p.dtype)
    return p.mean() + p.std() * z


def sanity_check(
    model: nn.Module,
    x: Tensor,
    methods: Sequence[str] | str,
    targets: Targets = None,
    mode: str = "cascading",
    *,
    layers: Sequence[str] | None = None,
    target_layer: LayerSpec = None,
    measures: Sequence[str] = MEASURES,
    seed: int = 0,
    keep_maps: bool = False,
    init: str = "redraw",
    progress: Any = None,
) -> SanityRows:
    """Model-randomisation test (Adebayo et al. 2018, section 3.1): does the map depend on the weights?

    Args:
        model: left untouched; the randomised models are deep copies.
        x: images ``(B, C, H, W)``.
        methods: camlens method names.
        targets: the classes to explain throughout (None: the trained model's prediction, kept fixed).
        mode: ``"cascading"`` (randomise from the top down, cumulatively) or ``"independent"``
            (one layer at a time, the rest trained).
        layers: module names, in the order to randomise (default: every module holding parameters, in
            reverse order of the forward pass, the classifier first).
        target_layer: for the CAM methods (default: camlens' automatic layer of the trained model).
        measures: any of ``spearman_abs``, ``spearman``, ``ssim``, ``hog`` (HOG needs scikit-image).
        seed: seeds the re-initialisation.
        init: ``"redraw"`` (scale-preserving truncated-normal re-draw of each parameter, buffers kept) or
            ``"reset"`` (each module's ``reset_parameters()``); see :func:`randomise`.
        keep_maps: keep each step's maps on ``.maps`` (for :func:`camlens.metrics.plot_sanity`).
        progress: ``True``: a tqdm bar of the randomisation steps on stderr (with the time left), and the
            perturbation methods' own bars; a callable ``(label, done, total)`` is called with
            ``label = "sanity check (<mode>)"`` and ``done = 0 .. len(layers)`` (see :mod:`camlens.progress`);
            None (default): as an enclosing :func:`camlens.progress.reporting` block says, else nothing.

    Returns:
        a list of dicts, one per (step, method, image): ``mode, step, layer, method, image`` and the
        measures. Maps are compared as ``(B, H, W)``: a ``(B, C, H, W)`` map summed over channels
        (``spearman``) and its absolute value (``spearman_abs``); SSIM and HOG on the absolute map
        normalised per image to [0, 1]. A constant map correlates 0 with anything.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18(num_classes=3).eval()
        >>> rows = sanity_check(model, torch.rand(1, 3, 32, 32), ["gradcam"], layers=["fc", "layer4"],
        ...                     measures=["spearman_abs", "ssim"])
        >>> [(r["layer"], r["method"]) for r in rows]
        [('fc', 'gradcam'), ('layer4', 'gradcam')]
    """
    from camlens.explanation import check_methods, explain
    from camlens.progress import Counter, reporting

    if progress is not None:
        with reporting(progress):
            return sanity_check(
                model, x, methods, targets, mode, layers=layers, target_layer=target_layer, measures=measures,
                seed=seed, keep_maps=keep_maps, init=init,
            )  # fmt: skip
    names = check_methods(methods)
    check_choice(mode, "mode", MODES)
    check_choice(init, "init", INITS)
    for measure in measures:
        check_choice(measure, "measure", MEASURES)
    classes = fixed_classes(model, x, targets)
    x = x.detach()
    layer_name: str | None = None
    if any(n != "guided_backprop" for n in names):
        layer_name = (default_layer(model, x) if target_layer is None else resolve_layer(model, target_layer))[0]
    order = list(layers) if layers is not None else _parameterised_layers(model, x)
    for name in order:
        resolve_layer(model, name)  # a clear error for an unknown name, before any work

    def maps_of(net: nn.Module) -> dict[str, Tensor]:
        result = explain(net, x, names, layer_name, classes)
        return {n: _as_2d(result[n].detach()).double().cpu() for n in names}

    original = maps_of(model)
    rows = SanityRows()
    cascade = copy.deepcopy(model) if mode == "cascading" else None
    counter = Counter(f"sanity check ({mode})", len(order))
    for step, name in enumerate(order, start=1):
        if cascade is not None:
            net = cascade
        else:
            net = copy.deepcopy(model)
        randomise(dict(net.named_modules())[name], seed + step, init)
        current = maps_of(net)
        if keep_maps:
            rows.maps[name] = current
        for method in names:
            values = _compare(original[method], current[method], measures)
            for image in range(x.shape[0]):
                row: dict[str, Any] = {"mode": mode, "step": step, "layer": name, "method": method, "image": image}
                row.update({m: float(values[m][image]) for m in measures})
                rows.append(row)
        counter.advance()
    if keep_maps:
        rows.maps = {"original": original, **rows.maps}
    return rows


class SanityRows(list):
    """The rows of :func:`sanity_check`; ``.maps[layer][method]`` holds the maps when ``keep_maps``."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: dict[str, dict[str, Tensor]] = {}


def _compare(before: Tensor, after: Tensor, measures: Sequence[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    if "spearman" in measures:
        out["spearman"] = spearman(before, after)
    if "spearman_abs" in measures:
        out["spearman_abs"] = spearman(before.abs(), after.abs())
    unit_before = normalize_per_image(before.abs())
    unit_after = normalize_per_image(after.abs())
    if "ssim" in measures:
        out["ssim"] = ssim(unit_before, unit_after)
    if "hog" in measures:
        out["hog"] = hog_similarity(unit_before, unit_after)
    return out
