"""What a loaded network is: the model, its input size and normalisation, its class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")


@dataclass
class Network:
    """A ready-to-explain network and how to feed it."""

    name: str
    model: nn.Module
    input_size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: list[str] = field(default_factory=list)
    weights: str = ""  # where the weights came from, for the report
    tokenizer: Any = None  # an image-text model's: list[str] -> token ids (None: open_clip's own)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def preprocess(self, images: object) -> torch.Tensor:
        """The model's input batch ``(B, 3, H, W)`` from image paths, PIL images or arrays (one or a list):
        each whole image resized to :attr:`input_size` (no crop) and normalised with :attr:`mean`/:attr:`std`.

        The batch is on the model's device.
        """
        from camlens.images import as_rgbs, to_batch

        batch = to_batch(as_rgbs(images), self.input_size, self.mean, self.std)
        parameter = next(self.model.parameters(), None)
        return batch if parameter is None else batch.to(parameter.device)


@lru_cache(maxsize=1)
def _imagenet_classes() -> tuple[str, ...]:
    return tuple(_IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines())


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, in class-index order (a text file shipped with camlens).

    >>> labels = imagenet_labels()
    >>> len(labels), labels[285]
    (1000, 'Egyptian cat')
    """
    return list(_imagenet_classes())
