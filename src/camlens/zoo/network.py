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
    channels: int = 3  # the input's channel count (1: grey, 4 or more: bands); images are read with this many
    bands: tuple[int, int, int] | None = None  # the channels the pictures show as red, green, blue (0-based)
    adapter: Any = None  # a detector's camlens.detection.DetectorAdapter (None: torchvision's or YOLO's, found)

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class {index}"

    def read(self, path: str | Path, max_side: int | None) -> tuple[Any, torch.Tensor]:
        """One image file as ``(picture background, model input)``: the displayable ``H x W x 3`` uint8 RGB the
        pictures are drawn on, and the ``(1, C, H, W)`` input, read with :attr:`channels` channels
        (:func:`camlens.images.read_pixels`; a 1-channel image is shown grey, a multi-band one by :attr:`bands`)."""
        rgb, pixels = self.read_pixels(path, max_side)
        return rgb, self.to_input(pixels)

    def read_pixels(self, path: str | Path, max_side: int | None) -> tuple[Any, Any]:
        """:meth:`read` without its torch part: ``(picture background, pixels)``, the pixels ``H x W x C`` as
        read (:meth:`to_input` makes them the model's input). Decoding only, numpy and Pillow: a reader thread
        of a folder run calls it (torch work there would start a second OpenMP team beside the model's)."""
        from camlens.images import display_rgb, read_image, read_pixels

        if self.channels == 3 and Path(path).suffix.lower() != ".npy":
            rgb = read_image(path, max_side=max_side)
            return rgb, rgb
        pixels = read_pixels(path, self.channels, max_side)
        return display_rgb(pixels, self.bands), pixels

    def to_input(self, pixels: Any) -> torch.Tensor:
        """The ``(1, C, H, W)`` model input of pixels from :meth:`read_pixels` (resized, normalised)."""
        from camlens.images import to_batch

        return to_batch([pixels], self.input_size, self.mean, self.std)

    def preprocess(self, images: object) -> torch.Tensor:
        """The model's input batch ``(B, 3, H, W)`` from image paths, PIL images or arrays (one or a list):
        each whole image resized to :attr:`input_size` (no crop) and normalised with :attr:`mean`/:attr:`std`.

        The batch is on the model's device.
        """
        from camlens.images import as_rgbs, to_batch

        batch = to_batch(as_rgbs(images), self.input_size, self.mean, self.std)
        parameter = next(self.model.parameters(), None)
        return batch if parameter is None else batch.to(parameter.device)


def input_channels(model: nn.Module, default: int = 3) -> int:
    """The channel count a model's input has: its first convolution's ``in_channels`` (in registration order;
    a ViT's patch embedding is one), or ``default`` where the model has none.

    Example:
        >>> from torch import nn
        >>> input_channels(nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1)))
        4
    """
    from torch.nn.modules.conv import _ConvNd

    for module in model.modules():
        if isinstance(module, _ConvNd):
            return int(module.in_channels)
    return default


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
