"""timm models by name (``timm:NAME`` or a bare timm name), with weights from a file. timm is imported here only."""

from __future__ import annotations

from typing import Any

from camlens.errors import MissingWeights
from camlens.zoo.network import IMAGENET_MEAN, IMAGENET_STD, Network, imagenet_labels
from camlens.zoo.weights import fit_state_dict, read_state_dict


def is_timm_name(name: str) -> bool:
    """Whether timm knows model ``name``."""
    import timm

    return bool(timm.is_model(name))


def load_timm(name: str, weight_path: str | None) -> Network:
    """timm's model ``name`` with the weights in ``weight_path`` (required: nothing is downloaded)."""
    import timm

    model = timm.create_model(name, pretrained=False)
    if weight_path is None:
        raise MissingWeights(f"timm model {name}")
    fit_state_dict(model, read_state_dict(weight_path), weight_path, name)
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
    labels = imagenet_labels() if model.num_classes == 1000 else []
    return Network(
        name,
        model.eval(),
        size,
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
        labels,
        weight_path,
    )
