"""Explaining: one batch of decoded images through one network, into :class:`ImageResult` records
(predictions, the explained class, compact maps, metrics, notes). Nothing is written here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.items import ImageResult, RunOptions
from camlens.pipeline.sources import model_inputs

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from camlens.zoo import Network


def explain_images(
    network: Network,
    rgbs: Sequence[np.ndarray],
    options: RunOptions = RunOptions(),
    *,
    paths: Sequence[str] | None = None,
    stems: Sequence[str] | None = None,
    device: torch.device | None = None,
    inputs: torch.Tensor | None = None,
) -> list[ImageResult]:
    """Explain decoded RGB images (H x W x 3 uint8) with ``network`` in one batch; nothing is written.

    ``inputs``: the model's input batch of ``rgbs`` when it is made already (:func:`prepare`).

    The maps come back at each image's own size (CAMs upsampled once from the layer map), each made when
    it is first read (``ImageResult.compact`` holds what they are made of).
    Raises :class:`~camlens.errors.UsageError` for a bad layer, class or method.
    """
    import camlens
    from camlens.images import to_batch
    from camlens.pipeline.maps import CompactMaps, PhotoMaps

    if not rgbs:
        return []
    device = device or resolve_device(options.device)
    model = network.model
    if inputs is None:
        inputs = to_batch(list(rgbs), network.input_size, network.mean, network.std)
    x = inputs.to(device)
    try:
        result = camlens.explain(
            model, x, list(options.methods), target_layer=options.target_layer, targets=options.class_id,
            layout=options.layout,
        )  # fmt: skip
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    probabilities = None if result.probabilities is None else result.probabilities.cpu()
    metric_values = image_metrics(model, x, result, options) if options.metrics else [{} for _ in rgbs]
    found = getattr(result, "layout", None)
    layout = "" if found is None else found.describe()
    guided = _describe_guided(result)
    out = []
    for i, rgb in enumerate(rgbs):
        compact = CompactMaps.from_explanation(result, i, list(options.methods), rgb.shape[:2])
        if not options.pictures:  # the float16 the batch's maps file keeps, made here (numpy's astype is slower)
            compact.inputs = {m: v.half() for m, v in compact.inputs.items()}
        p = None if probabilities is None else probabilities[i]
        class_id = None if result.classes is None else int(result.classes[i])
        top = [] if p is None else top_classes(p, options.topk, network)
        out.append(
            ImageResult(
                path="" if paths is None else str(paths[i]),
                stem=f"image{i}" if stems is None else stems[i],
                rgb=rgb,
                maps=PhotoMaps(compact),
                compact=compact,
                probabilities=p,
                class_id=class_id,
                score=float(result.scores[i]),
                layer=result.target_layer,
                top=top,
                class_name="" if class_id is None else network.label(class_id),
                notes=list(result.image_warnings[i]),  # this image's own, without batch indices
                layout=layout,
                guided_rule=guided,
                probability=None if p is None or class_id is None else float(p[class_id]),
                size=(int(rgb.shape[1]), int(rgb.shape[0])),
                methods=tuple(options.methods),
                metrics=metric_values[i],
            )
        )
    return out


def top_classes(probabilities: torch.Tensor, k: int, network: Network) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes of one item: ``(class, label, probability)``, most probable first."""
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [(int(c), network.label(int(c)), float(v)) for v, c in zip(values, indices, strict=True)]


def image_metrics(model: nn.Module, x: torch.Tensor, result: Any, options: RunOptions) -> list[dict[str, float]]:
    """Every ``options.metrics`` of every method's map, per image: ``{"method/metric": value}``.

    The maps are the explanation's, at the model's input size, for the explained classes.
    """
    from camlens.metrics import evaluate

    steps = {"steps": options.metric_steps}
    rows = evaluate(
        model, x, {m: result[m] for m in options.methods}, list(options.metrics), result.classes,
        target_layer=options.target_layer, layout=options.layout, options={"deletion": steps, "insertion": steps},
    )  # fmt: skip
    values: list[dict[str, float]] = [{} for _ in range(x.shape[0])]
    for row in rows:
        values[row["image"]][f"{row['method']}/{row['metric']}"] = row["value"]
    return values


def _describe_guided(result: Any) -> str:
    rule = getattr(result, "guided_rule", None)
    if not rule:
        return ""
    counts = ", ".join(f"{kind} x{count}" for kind, count in rule.items())
    return f"generalised f'(x)*max(g,0) at {counts}" if result.guided_generalised else counts


def explain_batch(
    network: Network, items: list[tuple[Path, str, Any, Any]], options: RunOptions, device: torch.device
) -> list[ImageResult]:
    """Explain one batch of decoded items ``(path, stem, rgb or error text, input or None)`` (:func:`decode`);
    bad images become error results."""
    import torch

    good = [item for item in items if not isinstance(item[2], str)]
    tensors = model_inputs(network, good)
    explained = iter(
        explain_images(
            network,
            [rgb for _, _, rgb, _ in good],
            options,
            paths=[str(p) for p, _, _, _ in good],
            stems=[s for _, s, _, _ in good],
            device=device,
            inputs=torch.cat(tensors) if good and tensors is not None else None,
        )
    )
    results = [
        ImageResult(str(p), s, error=rgb, methods=tuple(options.methods)) if isinstance(rgb, str) else next(explained)
        for p, s, rgb, _ in items
    ]
    for result in results:
        if result.stem != Path(result.path).stem:
            why = "another input has the same file name" if Path(result.path).stem in result.stem else "name too long"
            result.notes.append(f"written as {result.stem} ({why})")
    return results


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps`` or ``auto``, checked here (:func:`camlens.device.resolve_device`)."""
    from camlens.device import resolve_device as resolve

    return resolve(name)


def check_layer(network: Network, layer: str | None, prefix: str = "") -> None:
    """Fail before any compute, with a :class:`UsageError`, when ``layer`` is not a layer of the network."""
    if layer is None:
        return
    from camlens.layers import resolve_layer

    try:
        resolve_layer(network.model, layer)
    except ValueError as error:
        raise UsageError(f"{prefix}{error}") from None
