"""Reading images from disk into RGB arrays, and into model input batches (no cropping)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from camlens.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_PIXELS = 16_000 * 12_000  # 192 megapixels


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        low, high = float(data.min()), float(data.max())
        data = (data - low) / (high - low) * 255.0 if high > low else np.zeros_like(data)
        image = Image.fromarray(data.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB, upright (EXIF orientation applied), or raise one line."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"image {path} does not exist")
    if not path.is_file():
        raise UsageError(f"image {path} is not a file")
    if path.stat().st_size == 0:
        raise UsageError(f"image {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(path) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise UsageError(f"image {path} is too large ({opened.width} x {opened.height} pixels)")
                opened.load()
                image = ImageOps.exif_transpose(opened) or opened
                rgb = _to_rgb(image)
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise UsageError(f"image {path} is too large for Pillow to open safely") from None
    except UnidentifiedImageError:
        raise UsageError(f"{path} is not an image (or not a format Pillow can read)") from None
    except PermissionError:
        raise UsageError(f"image {path} cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"image {path} is damaged or truncated ({str(error).splitlines()[0][:100]})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise UsageError(f"image {path} has no pixels")
    return rgb


def collect_images(paths: list[str]) -> list[Path]:
    """Expand folders into their image files (sorted); keep files as given."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UsageError(f"folder {path} holds no images")
            found.extend(inside)
        else:
            found.append(path)
    return found


def to_batch(
    images: list[np.ndarray], size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """The whole of each image, resized (antialiased bilinear, no crop) to ``size`` and normalised."""
    tensors = []
    for rgb in images:
        t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
        antialias = t.shape[-2] > size[0] or t.shape[-1] > size[1]
        tensors.append(F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=antialias))
    batch = torch.cat(tensors)
    m = torch.tensor(mean, dtype=batch.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=batch.dtype).view(1, -1, 1, 1)
    return (batch - m) / s


def as_rgb(image: object) -> np.ndarray:
    """One image as H x W x 3 uint8 RGB, from a path, a PIL image, or an array (H x W or H x W x 3/4,
    uint8, or float in [0, 1]).

    Example:
        >>> as_rgb(np.zeros((2, 3), dtype=np.uint8)).shape
        (2, 3, 3)
    """
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _to_rgb(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be H x W or H x W x 3, got shape {image.shape}")
        array = array[..., :3]
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"an image array must be uint8 or float in [0, 1], not {array.dtype}")
            array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        array = np.ascontiguousarray(array)
        return array if array.flags.writeable else array.copy()
    raise TypeError(f"an image must be a path, a PIL image or an array, not {type(image).__name__}")


def as_rgbs(images: object) -> list[np.ndarray]:
    """:func:`as_rgb` over one image or a list of them."""
    if isinstance(images, list | tuple):
        return [as_rgb(image) for image in images]
    return [as_rgb(images)]
