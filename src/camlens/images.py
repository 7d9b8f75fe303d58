"""Reading images from disk into RGB arrays, or into arrays of any channel count (grey, RGBA, multi-band), and
into model input batches (no cropping)."""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from camlens.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy"}
MAX_PIXELS = 16_000 * 12_000  # 192 megapixels
DEFAULT_MAX_SIDE = 4096  # the pictures' resolution; the network input is resized from it (224 for most)
_RESIZABLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "I", "F"}


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


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down (antialiased, aspect ratio kept) so that its longer side is ``max_side``."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    if image.mode in ("1", "P", "PA"):  # palette and bilevel images resize in a full-colour mode
        alpha = image.mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if alpha else ("L" if image.mode == "1" else "RGB"))
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode not in _RESIZABLE:
        image = image.convert("RGB")
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # as Image.thumbnail: an integer box reduction down to twice the size (cheap), then bicubic
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _draft_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def read_image(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB, upright (EXIF orientation applied), or raise one line.

    Images whose longer side exceeds ``max_side`` are decoded at reduced size where the format allows
    (JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale), then scaled down (antialiased, aspect ratio kept)
    to exactly ``max_side`` pixels on the longer side: a 10,000 x 10,000 photo costs a fraction of its
    full-size memory, and the pictures keep far more resolution than the network's input needs.
    ``max_side=None`` keeps the full size.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "wide.jpg")
        >>> Image.new("RGB", (3000, 1000), "red").save(path)
        >>> read_image(path, max_side=600).shape
        (200, 600, 3)
    """
    path = Path(path)
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, not {max_side!r}")
    _check_file(path)
    if path.suffix.lower() == ".npy":
        return display_rgb(read_pixels(path, None, max_side))
    return _decode(path, str(path), MAX_PIXELS, max_side)


def _check_file(path: Path) -> None:
    """Raise one line unless ``path`` is a non-empty regular file (a loop, a broken link, a folder: each said)."""
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UsageError(f"image {path} is a symbolic link loop ({error.strerror})") from None
        if os.path.islink(path):
            target = os.readlink(path)
            raise UsageError(f"image {path} is a broken symbolic link (its target {target} does not exist)") from None
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"image {path} does not exist") from None
        raise UsageError(f"image {path} cannot be read ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"image {path} is a folder, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"image {path} is not a file")
    if info.st_size == 0:
        raise UsageError(f"image {path} is empty")


def read_pixels(path: str | Path, channels: int | None, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Read an image with ``channels`` channels as an ``H x W x C`` array, or raise one line naming the file.

    The array is uint8 (an 8-bit image), uint16 (a 16-bit one) or float32 (a ``.npy`` file's floats, taken as
    they are); :func:`to_batch` scales integers to [0, 1]. ``channels=1``: a grey image (a colour one is made
    grey); 3: RGB, as :func:`read_image`; 4: an RGBA or CMYK image's four bands, as stored (no compositing);
    any count: a multi-page TIFF with one band per page, or a ``.npy`` array ``H x W x C`` or ``C x H x W``
    (``H x W`` for one channel). ``channels=None`` takes a ``.npy`` array's own count. Larger than ``max_side``
    on the longer side, the array is scaled down (antialiased), as :func:`read_image` does.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bands.npy")
        >>> np.save(path, np.zeros((5, 6, 4), dtype=np.float32))
        >>> read_pixels(path, 4).shape
        (5, 6, 4)
    """
    path = Path(path)
    if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        raise ValueError(f"channels must be a positive int, not {channels!r}")
    _check_file(path)
    if path.suffix.lower() != ".npy":
        if channels == 3:
            return read_image(path, max_side=max_side)
        return _fit_array(_bands(path, channels), max_side)
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as error:
        raise UsageError(f"image {path} cannot be read ({error.strerror or error})") from None
    except (ValueError, EOFError) as error:
        raise UsageError(f"image {path} is not a readable .npy array ({str(error).splitlines()[0][:100]})") from None
    if array.ndim == 2:
        array = array[..., None]
    shape = tuple(array.shape)
    if array.ndim == 3 and array.shape[2] != channels:
        # C x H x W: the count asked for leads, or (none asked for) a short first axis before a long last one
        leads = array.shape[0] == channels if channels is not None else array.shape[0] <= 16 < array.shape[2]
        if leads:
            array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise UsageError(f"image {path} is an array of shape {shape}, not H x W x C")
    if channels is not None and array.shape[2] != channels:
        raise UsageError(
            f"image {path} is an array of shape {shape}: neither H x W x {channels} nor {channels} x H x W "
            f"(the network takes {channels} channels; see --channels)"
        )
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.number)):
        raise UsageError(f"image {path} holds {array.dtype} values, not numbers")
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise UsageError(f"image {path} holds NaN or infinite values")
    return _fit_array(np.ascontiguousarray(array), max_side)


def _bands(path: Path, channels: int | None) -> np.ndarray:
    """A Pillow-readable file's bands: one grey band, RGBA / CMYK as stored, or a multi-page TIFF's pages."""
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageTooLarge(f"image {path} is too large ({opened.width} x {opened.height} pixels)")
            pages = getattr(opened, "n_frames", 1)
            if channels is not None and channels > 1 and pages == channels:
                planes = []
                for page in range(pages):
                    opened.seek(page)
                    planes.append(_plane(opened.copy(), path))
                return np.stack(planes, axis=-1)
            image = ImageOps.exif_transpose(opened) or opened
            image.load()
            if channels == 1:
                return _plane(image if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F") else image.convert("L"),
                              path)[..., None]  # fmt: skip
            if channels == 4 and image.mode in ("RGBA", "CMYK", "RGBX"):
                return np.asarray(image, dtype=np.uint8).copy()
            have = len(image.getbands())
            raise UsageError(
                f"image {path} has {have} band{'s' * (have != 1)} ({image.mode}, {pages} page{'s' * (pages != 1)}); "
                f"the network takes {channels} channels: give a grey image, an RGBA one, a TIFF with a page per "
                "channel, or a .npy array H x W x C"
            )
    except UsageError:
        raise
    except (UnidentifiedImageError, ImportError):
        raise NotAnImage(f"{path} is not an image (or not a format Pillow can read)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"image {path} is damaged or truncated ({str(error).splitlines()[0][:100]})") from None


def _plane(image: Image.Image, path: Path) -> np.ndarray:
    """One band as a 2-D array: uint8, uint16 (16-bit images), or float32 (32-bit integer or float images)."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16).copy()
    if image.mode in ("I", "F"):
        return np.asarray(image, dtype=np.float32).copy()
    if image.mode != "L":
        raise UsageError(f"image {path} has a {image.mode} page: a page per channel must be one grey band")
    return np.asarray(image, dtype=np.uint8).copy()


def _fit_array(array: np.ndarray, max_side: int | None) -> np.ndarray:
    """An ``H x W x C`` array scaled down (antialiased bilinear) to ``max_side`` on its longer side, same dtype."""
    height, width = array.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return array
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    t = torch.from_numpy(array.astype(np.float32)).permute(2, 0, 1)[None]
    small = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0)
    if array.dtype in (np.uint8, np.uint16):
        small = small.round().clamp(0, float(np.iinfo(array.dtype).max))
    return np.ascontiguousarray(small.numpy().astype(array.dtype))


def unit_range(array: np.ndarray) -> np.ndarray:
    """An image array as float32: uint8 / 255, uint16 / 65535, floats as they are."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    return array.astype(np.float32)


def display_rgb(pixels: np.ndarray, bands: tuple[int, ...] | None = None) -> np.ndarray:
    """A displayable ``H x W x 3`` uint8 rendering of an ``H x W x C`` image (the pictures' background).

    One channel: grey. Three uint8 channels: themselves. Otherwise the ``bands`` (three indices, 0-based;
    default the first three, or the first one for two channels) each stretched from its 2nd to its 98th
    percentile, as satellite viewers show multi-band images.

    Example:
        >>> display_rgb(np.zeros((2, 3, 1), dtype=np.uint8)).shape
        (2, 3, 3)
    """
    channels = pixels.shape[2]
    if bands is None:
        bands = (0, 1, 2) if channels >= 3 else (0, 0, 0)
    if len(bands) != 3 or any(not 0 <= b < channels for b in bands):
        raise UsageError(f"display bands {list(bands)} must be three of the image's {channels} channels (0-based)")
    if pixels.dtype == np.uint8:  # 8-bit bands are shown as stored
        return np.ascontiguousarray(pixels[..., list(bands)])
    out = np.empty(pixels.shape[:2] + (3,), dtype=np.uint8)
    for i, band in enumerate(bands):
        plane = unit_range(pixels[..., band])
        low, high = np.percentile(plane, (2, 98))
        if high <= low:
            low, high = float(plane.min()), float(plane.max())
        scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
        out[..., i] = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


class NotAnImage(UsageError):
    """Bytes that Pillow cannot identify as an image."""


class ImageTooLarge(UsageError):
    """An image with more pixels than the limit (or than Pillow opens safely)."""


def decode_image(
    data: bytes, name: str = "the upload", max_pixels: int = MAX_PIXELS, max_side: int | None = DEFAULT_MAX_SIDE
) -> np.ndarray:
    """Decode image bytes held in memory (nothing touches the disk) like :func:`read_image`.

    Raises :class:`NotAnImage`, :class:`ImageTooLarge` (more than ``max_pixels``), or :class:`UsageError`
    (empty, damaged or truncated), each with a one-line message naming ``name``.

    Example:
        >>> import io; from PIL import Image
        >>> buffer = io.BytesIO(); Image.new("RGB", (3, 2)).save(buffer, format="PNG")
        >>> decode_image(buffer.getvalue()).shape
        (2, 3, 3)
    """
    if not data:
        raise UsageError(f"image {name} is empty")
    return _decode(io.BytesIO(data), name, max_pixels, max_side)


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int, max_side: int | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(source) as opened:
                if opened.width * opened.height > max_pixels:
                    raise ImageTooLarge(f"image {name} is too large ({opened.width} x {opened.height} pixels)")
                draft = _draft_size(opened.width, opened.height, max_side)
                if draft is not None:
                    opened.draft(None, draft)  # JPEG: decode at the smallest scale still >= draft; others: no-op
                opened.load()
                image = opened if max_side is None else _fit(opened, max_side)
                image = ImageOps.exif_transpose(image) or image
                rgb = _to_rgb(image)
    except UsageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image {name} is too large for Pillow to open safely") from None
    except (UnidentifiedImageError, ImportError):
        # ImportError: a hook on Image.open that fetches a decoder on failure (ultralytics installs one when it is
        # imported, retrying through the missing pi_heif) still means Pillow could not read the file
        raise NotAnImage(f"{name} is not an image (or not a format Pillow can read)") from None
    except PermissionError:
        raise UsageError(f"image {name} cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UsageError(f"image {name} is damaged or truncated ({str(error).splitlines()[0][:100]})") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise UsageError(f"image {name} has no pixels")
    return rgb


def to_batch(
    images: list[np.ndarray], size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """The whole of each image (``H x W x C``: uint8 or uint16 scaled to [0, 1], floats as they are), resized
    (antialiased bilinear, no crop) to ``size`` and normalised with one ``mean`` and ``std`` per channel."""
    tensors = []
    for rgb in images:
        if rgb.dtype == np.uint8:  # unit_range's uint8 / 255 in torch: the same float32 values, on every core
            pixels = rgb if rgb.flags.c_contiguous and rgb.flags.writeable else np.array(rgb)  # (from_numpy warns)
            t = torch.from_numpy(pixels).to(torch.float32).div_(255.0).permute(2, 0, 1)[None]
        else:
            t = torch.from_numpy(unit_range(rgb)).permute(2, 0, 1)[None]
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
