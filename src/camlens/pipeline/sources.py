"""Inputs: the files and folders given, as image paths (sorted, links and loops handled), their output stems,
the identity a resumed run checks (path, size, mtime), and decoding (the engines' reader threads and Ray
workers call :func:`decode`)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError

if TYPE_CHECKING:
    from camlens.zoo import Network


def check_sources(paths: Iterable[str | os.PathLike]) -> None:
    """Fail at once, before any model is loaded, when a given file or folder does not exist (torch-free)."""
    for item in paths:
        if not os.path.lexists(item):
            raise UsageError(f"image {item} does not exist")


def collect_sources(
    paths: Iterable[str | os.PathLike],
    recursive: bool = False,
    on_note: Callable[[str], None] | None = None,
    *,
    suffixes: Any = None,
    noun: str = "images",
) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted by name); a folder with none is an error.

    ``suffixes`` and ``noun``: another kind of item's file suffixes (default: the images') and what they are
    called in messages (a clip task's: :mod:`camlens.pipeline.clips`).

    Entries of a folder that cannot be images are left out; entries that look like images but cannot be read
    (a symbolic link loop, a broken link, a folder named ``x.jpg``) are kept, and become failed rows with
    their reason. Sub-folders are searched with ``recursive``; without it ``on_note`` hears how many were not.
    """
    from camlens.images import IMAGE_SUFFIXES

    suffixes = IMAGE_SUFFIXES if suffixes is None else suffixes
    found: list[Path] = []
    not_searched = 0
    for item in paths:
        path = Path(item)
        if path.is_dir():
            inside, folders = _scan(path, suffixes, recursive, set())
            not_searched += folders
            if not inside:
                hint = f" ({folders} sub-folder{'s' * (folders != 1)} not searched: pass --recursive)" * bool(folders)
                raise UsageError(f"folder {path} holds no {noun}{hint}")
            found.extend(inside)
        else:
            found.append(path)
    if not_searched and on_note is not None:
        on_note(
            f"{not_searched} sub-folder{'s were' if not_searched != 1 else ' was'} not searched "
            f"(pass --recursive to explain the {noun} in sub-folders too)"
        )
    return found


def _scan(folder: Path, suffixes: Any, recursive: bool, seen: set[tuple[int, int]]) -> tuple[list[Path], int]:
    """``folder``'s image entries (sorted; sub-folders' after, with ``recursive``) and its sub-folders not searched."""
    try:
        info = folder.stat()
        seen.add((info.st_dev, info.st_ino))  # a link back up the tree is not searched twice
    except OSError:
        pass
    images: list[Path] = []
    folders: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            looks = Path(entry.name).suffix.lower() in suffixes
            try:
                is_dir = entry.is_dir()  # raises for a loop (a broken link is no folder)
            except OSError:  # a symbolic link loop: reported as a failed row (whatever its name)
                images.append(Path(entry.path))
                continue
            if is_dir and (recursive or not looks):
                folders.append(Path(entry.path))
            elif looks:
                images.append(Path(entry.path))  # files, and a folder or broken link named as an image: failed rows
    images.sort()
    if not recursive:
        return images, len(folders)
    for sub in sorted(folders):
        try:
            info = sub.stat()
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        inner, _ = _scan(sub, suffixes, True, seen)
        images.extend(inner)
    return images, 0


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """An output stem per path: the file's stem, or ``<folder>_<stem>`` (then ``-2``, ``-3``) where stems collide.

    Example:
        >>> unique_stems([Path("a/cat.jpg"), Path("b/cat.png"), Path("dog.jpg")])
        ['a_cat', 'b_cat', 'dog']
    """
    counts = Counter(p.stem for p in paths)
    stems = [f"{p.parent.name}_{p.stem}" if counts[p.stem] > 1 and p.parent.name else p.stem for p in paths]
    seen: Counter[str] = Counter()
    unique = []
    for stem in stems:
        seen[stem] += 1
        unique.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return unique


def source_key(path: str) -> str:
    """``absolute path:size:mtime``: an image counts as done only while its file is unchanged."""
    try:
        stat = os.stat(path)
    except OSError:
        return os.path.abspath(path) if path else path
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def decode(
    batch: list[tuple[Path, str]],
    max_side: int | None,
    timings: dict[str, float],
    network: Network | None = None,
    read: Callable[[Any, Path, int | None], tuple[Any, Any]] | None = None,
) -> list[tuple[Path, str, Any, Any]]:
    """Read ``(path, stem)`` items: ``(path, stem, rgb or error text, the network's input, its pixels, or None)``.

    With ``network``, each image is read with the network's channel count (:meth:`camlens.zoo.Network.read_pixels`):
    ``rgb`` is the pictures' displayable background and the fourth field the pixels the model's input is made of,
    by :func:`model_inputs` in the thread that runs the model (a reader thread does no torch work: beside a
    model whose ops use every core, a second OpenMP team slows each of its ops). ``read(network, path,
    max_side)``: a task's own reader instead (a clip task's: its frames and its ``(1, C, T, H, W)`` input); a
    :class:`UsageError` or ``OSError`` it raises is the item's error text."""
    from camlens.images import read_image

    t = time.perf_counter()
    items: list[tuple[Path, str, Any, Any]] = []
    for path, stem in batch:
        tensor = None
        rgb: Any
        try:
            if read is not None:
                rgb, tensor = read(network, path, max_side)
            elif network is not None:
                rgb, tensor = network.read_pixels(path, max_side)
            else:
                rgb = read_image(path) if max_side is None else read_image(path, max_side=max_side)
        except UsageError as error:
            rgb = str(error)
        except OSError as error:  # e.g. no permission to read: a failed row, like a bad image
            rgb = f"image {path} cannot be read ({error.strerror or error})"
        items.append((path, stem, rgb, tensor))
    timings["decode"] += time.perf_counter() - t
    return items


def model_inputs(network: Network, good: list[tuple[Any, str, Any, Any]]) -> list[Any] | None:
    """The ``(1, C, H, W)`` inputs of decoded items (:func:`decode`): made here from their pixels (or given as
    tensors already), None when some item has neither."""
    import numpy as np

    inputs = []
    for item in good:
        value = item[3]
        if value is None:
            return None
        inputs.append(network.to_input(value) if isinstance(value, np.ndarray) else value)
    return inputs
