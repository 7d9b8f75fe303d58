"""torchvision's semantic segmentation models by name (DeepLabV3, FCN, LR-ASPP), never downloaded.

Weights from ``weight_path``, else the local torch cache (``$TORCH_HOME/hub/checkpoints``); with neither,
:class:`~camlens.errors.MissingWeights` says where to put the file (``random_weights``: random ones, for
structure checks). The class names are the checkpoints' own (the 21 PASCAL VOC classes, background first);
the input side is the checkpoints' resize (520), the normalisation ImageNet's.
"""

from __future__ import annotations

from camlens.zoo.network import Network
from camlens.zoo.weights import fit_state_dict, local_state_dict


def segmenter_names() -> list[str]:
    """Every torchvision segmentation model name, sorted."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.segmentation))


def load_segmenter(name: str, weight_path: str | None, offline: bool, random_weights: bool) -> Network:
    """torchvision's segmenter ``name`` with its class names and preprocessing (``offline``: nothing is
    downloaded either way)."""
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    side = preset.resize_size[0] if isinstance(preset.resize_size, list | tuple) else preset.resize_size
    labels = list(weights.meta.get("categories", []))
    state, source = local_state_dict(name, weights, weight_path, random_weights)
    extra = {"aux_loss": True} if state is not None and any(k.startswith("aux_classifier.") for k in state) else {}
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=len(labels), **extra)
    if state is not None:
        fit_state_dict(model, state, source, name)  # raises with the keys that do not fit
    return Network(name, model.eval(), (side, side), tuple(preset.mean), tuple(preset.std), labels, source)
