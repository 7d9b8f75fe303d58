"""Clips and volumes through the folder run: the task ``camlens explain`` runs when the network takes
``(B, C, T, H, W)`` inputs (its first convolution is 3-D: torchvision's video networks, a 3-D CNN).

Items (:meth:`ClipClassification.collect`): each file given is one clip, a video (``.gif``, ``.mp4``,
``.avi``, ``.mov``, ``.mkv``, ``.webm``, ``.m4v``; all but GIFs read with PyAV, ``pip install camlens[video]``)
or a volume (``.npy``, ``(D, H, W)`` or ``(C, D, H, W)``); a folder given is expanded to the clip files it
holds, or, with ``frame_folders`` (``--frame-folders``), is itself one clip whose frames are its image files
in name order.

Decoding (:meth:`ClipClassification.read`): ``frames`` frames (``--frames T``) are taken at evenly spaced
positions (a shorter clip repeats frames, and says so; default: 16 of a video's frames, all of a shorter
one's, every slice of a volume); each frame is resized to the network's input size and normalised as images are
(:func:`camlens.images.to_batch`; a volume's values as stored, uint8 / 255 and uint16 / 65535), and the
frames stacked along time into the ``(1, C, T, H, W)`` input. Clips of one batch with the same input shape
are explained together.

Files per clip and method (the maps are ``camlens.explain``'s: a CAM's ``(T, H, W)`` map min-max
normalised over the whole clip, an image-shaped map ``(C, T, H, W)`` shown as guided backprop is, its
standardisation over the whole clip):

* a video: ``<stem>-<network>-<method>.gif``, the frames with the map over each (animated), and
  ``<stem>-<network>-<method>-strip.png``, the same frames in a row (at most 128 pixels a side);
* a volume: ``<stem>-<network>-<method>-slices.png``, a montage of the slices (rows of columns, in depth
  order) with the map over each, on the volume shown grey (stretched from its 2nd to its 98th percentile).

``--save-maps`` adds ``<stem>-<network>-maps.npz`` (``clip/<method>``: the maps at the input's size,
float32; ``frame_indices``: the frames used; ``class_id``, ``score``); ``--no-pictures`` writes
``maps-<network>-<index>.npz`` per batch (``<stem>/clip/<method>``, float16). The results row is the
image row (class, score, top-k, files) with ``kind`` (``video`` or ``volume``), ``frames`` (T) and
``source_frames`` (frames or slices the file has).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camlens.errors import UsageError
from camlens.pipeline.files import _encode, caption
from camlens.pipeline.items import ImageResult, RunOptions
from camlens.pipeline.sources import _scan, collect_sources

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from camlens.zoo import Network

VIDEO_SUFFIXES = (".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
VOLUME_SUFFIXES = (".npy",)
CLIP_SUFFIXES = frozenset(VIDEO_SUFFIXES + VOLUME_SUFFIXES)
VIDEO_FRAMES = 16  # a video's frames when --frames is not given (evenly spaced; a shorter one keeps its own)
DISPLAY_SIDE = 256  # a video frame's longer side in the animated overlay (at most)
STRIP_SIDE = 128  # and in the frame strip
FRAME_MS = 125  # an animated overlay's time per frame
INSTALL_AV = "reading {suffix} files needs PyAV: pip install av (or pip install camlens[video])"
MAPS_FORMAT = "clips1"


def takes_clips(model: nn.Module) -> bool:
    """Whether a model's input is ``(B, C, T, H, W)``: its first convolution (in registration order) is 3-D."""
    from torch.nn.modules.conv import _ConvNd

    for module in model.modules():
        if isinstance(module, _ConvNd):
            return len(module.kernel_size) == 3
    return False


def even_indices(count: int, frames: int) -> list[int]:
    """``frames`` positions spread evenly over ``count`` frames, first and last included (repeats when fewer).

    Example:
        >>> even_indices(10, 4), even_indices(3, 5)
        ([0, 3, 6, 9], [0, 1, 1, 2, 2])
    """
    if frames == 1:
        return [0]
    return [int(math.floor(i * (count - 1) / (frames - 1) + 0.5)) for i in range(frames)]


@dataclass
class ClipPixels:
    """A decoded clip's displayable side: the frames the pictures are drawn on, ``(T, h, w, 3)`` uint8."""

    frames: np.ndarray
    kind: str  # "video" or "volume"
    source_frames: int  # frames (or slices) the file has
    indices: list[int]  # those used
    notes: list[str] = field(default_factory=list)


@dataclass
class ClipResult(ImageResult):
    """One clip's record: ``maps`` are ``camlens.explain``'s for the clip (``(T, H, W)`` CAMs, ``(C, T, H, W)``
    image-shaped maps, at the input's size); ``clip`` its frames."""

    clip: ClipPixels | None = None
    kind: str = ""
    frames: int = 0
    source_frames: int = 0
    indices: list[int] = field(default_factory=list)

    def record(self, network: str, key: str = "") -> dict[str, Any]:
        row = super().record(network, key)
        row.update(kind=self.kind or None, frames=self.frames or None, source_frames=self.source_frames or None)
        return row

    def slim(self) -> None:
        super().slim()
        self.clip = None


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:160]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _sample(count: int, frames: int | None, default: int | None) -> tuple[list[int], list[str]]:
    """The frame positions to use of ``count`` and the note a short clip gets."""
    wanted = frames or min(count, default or count)
    notes = []
    if wanted > count:
        notes.append(f"the clip has {count} frame{'s' * (count != 1)}: frames repeated to make {wanted}")
    return even_indices(count, wanted), notes


def _gif_frames(path: Path, wanted: Callable[[int], list[int]]) -> tuple[list[np.ndarray], int]:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        count = int(getattr(image, "n_frames", 1))
        picked = wanted(count)
        frames: dict[int, np.ndarray] = {}
        for index in sorted(set(picked)):
            image.seek(index)
            frames[index] = np.asarray(image.convert("RGB"))
    return [frames[i] for i in picked], count


def _av_frames(path: Path, wanted: Callable[[int], list[int]]) -> tuple[list[np.ndarray], int]:
    try:
        import av
    except ImportError:
        raise UsageError(INSTALL_AV.format(suffix=path.suffix.lower())) from None
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise UsageError(f"clip {path} has no video stream")
        stream = container.streams.video[0]
        count = int(stream.frames or 0)
        if count <= 0:  # the container does not say: count the packets
            count = sum(1 for packet in container.demux(stream) if packet.size)
    if count <= 0:
        raise UsageError(f"clip {path} has no frames")
    picked = wanted(count)
    keep = set(picked)
    frames: dict[int, np.ndarray] = {}
    last = None
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in keep:
                frames[index] = last = frame.to_ndarray(format="rgb24")
            if index >= max(picked):
                break
    if not frames:
        raise UsageError(f"clip {path} has no frames that decode")
    for index in picked:  # a frame count that was off: the last frame decoded stands in
        if index not in frames:
            frames[index] = last if last is not None else next(iter(frames.values()))
    return [frames[i] for i in picked], count


def _folder_frames(path: Path, wanted: Callable[[int], list[int]]) -> tuple[list[np.ndarray], int]:
    from camlens.images import IMAGE_SUFFIXES, read_image

    files, _ = _scan(path, IMAGE_SUFFIXES, False, set())
    if not files:
        raise UsageError(f"folder {path} holds no frames (image files)")
    picked = wanted(len(files))
    read = {i: read_image(files[i], max_side=None) for i in sorted(set(picked))}
    return [read[i] for i in picked], len(files)


class ClipClassification:
    """The clip task: a video network's (or a 3-D CNN's) class explained for each clip or volume."""

    def __init__(self, frames: int | None = None, frame_folders: bool = False) -> None:
        if frames is not None and frames < 1:
            raise UsageError("--frames must be at least 1")
        self.frames = frames
        self.frame_folders = frame_folders
        self.name = f"clips[frames={frames or 'auto'}{',folders' * frame_folders}]"

    # the items
    def collect(
        self, paths: Iterable[Any], recursive: bool = False, on_note: Callable[[str], None] | None = None
    ) -> list[Path]:
        """Each file a clip; each folder its clip files, or (``frame_folders``) itself one clip of frames."""
        paths = [Path(p) for p in paths]
        if self.frame_folders:
            return paths
        try:
            return collect_sources(paths, recursive, on_note, suffixes=CLIP_SUFFIXES, noun="clips")
        except UsageError as error:
            raise UsageError(f"{error}; a folder of frames is one clip with --frame-folders") from None

    def read(self, network: Network, path: Path, max_side: int | None) -> tuple[ClipPixels, torch.Tensor]:
        """One clip decoded: its frames to show and its ``(1, C, T, H, W)`` input (a bad file: UsageError)."""
        path = Path(path)
        try:
            if path.is_dir():
                return self._video(network, path, _folder_frames)
            suffix = path.suffix.lower()
            if suffix in VOLUME_SUFFIXES:
                return self._volume(network, path)
            if suffix == ".gif":
                return self._video(network, path, _gif_frames)
            if suffix in VIDEO_SUFFIXES:
                return self._video(network, path, _av_frames)
        except (UsageError, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - PIL, PyAV, numpy: a bad file is one line
            raise UsageError(f"clip {path} cannot be read ({_first_line(error)})") from None
        if not path.exists():
            raise UsageError(f"clip {path} does not exist")
        shown = ", ".join((*VIDEO_SUFFIXES, *VOLUME_SUFFIXES))
        raise UsageError(f"{path} is not a clip: give a video ({shown}) or a folder of frames (--frame-folders)")

    def _video(
        self, network: Network, path: Path, frames_of: Callable[..., tuple[list[np.ndarray], int]]
    ) -> tuple[ClipPixels, torch.Tensor]:
        import numpy as np
        from PIL import Image

        from camlens.images import to_batch

        chosen: dict[str, Any] = {}

        def wanted(count: int) -> list[int]:
            chosen["indices"], chosen["notes"] = _sample(count, self.frames, VIDEO_FRAMES)
            return list(chosen["indices"])

        frames, count = frames_of(path, wanted)
        if network.channels not in (1, 3):
            raise UsageError(f"clip {path} is a video (RGB): {network.name} takes {network.channels} channels")
        pixels = frames if network.channels == 3 else [f.mean(axis=2, keepdims=True).astype(np.float32) / 255.0
                                                        for f in frames]  # fmt: skip
        x = to_batch(pixels, network.input_size, network.mean, network.std)  # (T, C, H, W)
        height, width = frames[0].shape[:2]
        scale = min(1.0, DISPLAY_SIDE / max(height, width))
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        bilinear = Image.Resampling.BILINEAR

        def fit(frame: np.ndarray) -> np.ndarray:
            same = (frame.shape[1], frame.shape[0]) == size
            return frame if same else np.asarray(Image.fromarray(frame).resize(size, bilinear))

        shown = np.stack([fit(f) for f in frames])
        clip = ClipPixels(shown, "video", count, chosen["indices"], chosen["notes"])
        return clip, x.permute(1, 0, 2, 3)[None].contiguous()

    def _volume(self, network: Network, path: Path) -> tuple[ClipPixels, torch.Tensor]:
        import numpy as np

        from camlens.images import display_rgb, to_batch

        array = np.load(path, allow_pickle=False, mmap_mode="r")
        if array.ndim not in (3, 4) or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise UsageError(
                f"volume {path} is a {array.dtype} array of shape {tuple(array.shape)}: a volume is a numeric "
                "(D, H, W) or (C, D, H, W) array"
            )
        volume = np.asarray(array if array.ndim == 4 else array[None])
        if volume.shape[0] != network.channels:
            raise UsageError(
                f"volume {path} has {volume.shape[0]} channel{'s' * (volume.shape[0] != 1)} (shape "
                f"{tuple(array.shape)}): {network.name} takes {network.channels}"
            )
        if min(volume.shape[1:]) < 1:
            raise UsageError(f"volume {path} is empty (shape {tuple(array.shape)})")
        if not np.isfinite(volume).all():
            raise UsageError(f"volume {path} holds NaN or infinite values")
        count = volume.shape[1]
        indices, notes = _sample(count, self.frames, None)
        slices = [np.ascontiguousarray(np.moveaxis(volume[:, i], 0, -1)) for i in indices]  # (H, W, C) each
        x = to_batch(slices, network.input_size, network.mean, network.std)  # (T, C, H, W)
        depth, height, width = len(indices), *volume.shape[2:]
        stacked = np.concatenate(slices, axis=0)  # (T*H, W, C): one stretch for the whole volume
        shown = display_rgb(stacked, network.bands).reshape(depth, height, width, 3)
        clip = ClipPixels(shown, "volume", count, indices, notes)
        return clip, x.permute(1, 0, 2, 3)[None].contiguous()

    # explaining
    def explain_batch(
        self, network: Network, items: list[tuple[Any, str, Any, Any]], options: RunOptions, device: torch.device
    ) -> list[ImageResult]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(items):
            if not isinstance(item[2], str):
                groups.setdefault(tuple(item[3].shape), []).append(i)
        made: dict[int, ClipResult] = {}
        for members in groups.values():
            for i, result in zip(members, self._explain([items[i] for i in members], network, options, device),
                                 strict=True):  # fmt: skip
                made[i] = result
        out: list[ImageResult] = []
        for i, (path, stem, pixels, _) in enumerate(items):
            record = made.get(i) or ClipResult(str(path), stem, error=pixels, methods=tuple(options.methods))
            if record.stem != Path(record.path).stem:
                clash = Path(record.path).stem in record.stem
                why = "another input has the same file name" if clash else "name too long"
                record.notes.append(f"written as {record.stem} ({why})")
            out.append(record)
        return out

    def _explain(
        self, good: list[tuple[Any, str, Any, Any]], network: Network, options: RunOptions, device: torch.device
    ) -> list[ClipResult]:
        import torch

        import camlens
        from camlens.pipeline.worker import top_classes

        x = torch.cat([item[3] for item in good]).to(device)
        try:
            result = camlens.explain(
                network.model, x, list(options.methods), target_layer=options.target_layer,
                targets=options.class_id, layout=options.layout,
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            raise UsageError(str(error)) from None
        probabilities = None if result.probabilities is None else result.probabilities.cpu()
        found = getattr(result, "layout", None)
        out = []
        for i, (path, stem, clip, _) in enumerate(good):
            p = None if probabilities is None else probabilities[i]
            class_id = None if result.classes is None else int(result.classes[i])
            maps = {m: result[m][i].detach().float().cpu() for m in options.methods}
            out.append(
                ClipResult(
                    path=str(path), stem=stem, maps=maps, probabilities=p, class_id=class_id,
                    score=float(result.scores[i]), layer=result.target_layer,
                    top=[] if p is None else top_classes(p, options.topk, network),
                    class_name="" if class_id is None else network.label(class_id),
                    notes=[*clip.notes, *result.image_warnings[i]],
                    layout="" if found is None else found.describe(),
                    probability=None if p is None or class_id is None else float(p[class_id]),
                    size=(int(clip.frames.shape[2]), int(clip.frames.shape[1])), methods=tuple(options.methods),
                    clip=clip, kind=clip.kind, frames=len(clip.indices), source_frames=clip.source_frames,
                    indices=list(clip.indices),
                )
            )  # fmt: skip
        return out

    # files
    def planned_files(self, stem: str, network: str, options: RunOptions) -> list[str]:
        """Every name a clip may get (a video's and a volume's: which it is shows only once it is read)."""
        if not options.pictures:
            return []
        base = f"{stem}-{network}"
        names = [name for m in options.methods
                 for name in (f"{base}-{m}.gif", f"{base}-{m}-strip.png", f"{base}-{m}-slices.png")]  # fmt: skip
        if options.save_maps:
            names.append(f"{stem}-{network}-maps.npz")
        return names

    def files(self, record: ImageResult, network: str, options: RunOptions) -> dict[str, bytes]:
        from camlens.render import title

        assert isinstance(record, ClipResult) and record.clip is not None
        blobs: dict[str, bytes] = {}
        base = f"{record.stem}-{network}"
        for m in options.methods:
            cam = record.maps[m].numpy()
            frames = clip_pictures(record.clip.frames, cam, options.colormap)
            label = f"{caption(record)} | {title(m)}" if options.annotate else None
            gradient = cam.ndim == 4
            if record.kind == "volume":
                blobs[f"{base}-{m}-slices.png"] = _encode(_captioned(montage(frames), label, options, gradient), "PNG")
            else:
                blobs[f"{base}-{m}.gif"] = animated_gif(frames)
                blobs[f"{base}-{m}-strip.png"] = _encode(_captioned(strip(frames), label, options, gradient), "PNG")
        if options.save_maps:
            blobs[f"{base}-maps.npz"] = _maps_bytes([record], single=True)
        return blobs

    def batch_files(self, records: list[ImageResult], network: str, index: int) -> dict[str, bytes]:
        return {f"maps-{network}-{index:06d}.npz": _maps_bytes(records, single=False)}

    def row(self, record: ImageResult, network: str, key: str) -> dict[str, Any]:
        return record.record(network, key)


def _captioned(picture: np.ndarray, label: str | None, options: RunOptions, gradient: bool) -> np.ndarray:
    """``--annotate``: a title bar (class, method) and a colour bar (a grey scale for a guided picture)."""
    if label is None:
        return picture
    from camlens.viz.annotate import annotate

    return annotate(picture, label, None if gradient else options.colormap, gradient=gradient)


def clip_pictures(frames: np.ndarray, cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Each frame ``(T, h, w, 3)`` with its map: a ``(T, H, W)`` map in [0, 1] coloured over it, or an
    image-shaped ``(C, T, H, W)`` map shown as guided backprop is (standardised over the whole clip)."""
    import numpy as np
    import torch

    from camlens.viz import gradient_image, overlay, resize_maps
    from camlens.viz.annotate import colorize

    size = frames.shape[1:3]
    if cam.ndim == 4:  # (C, T, H, W): per frame (T, C, H, W) resized, then (T, h, w, C)
        moved = resize_maps(torch.from_numpy(np.ascontiguousarray(np.moveaxis(cam, 1, 0))), size).numpy()
        return gradient_image(np.moveaxis(moved, 1, -1))
    values = resize_maps(torch.from_numpy(np.ascontiguousarray(cam)), size).numpy()
    return np.stack([overlay(frame, colorize(v, colormap)) for frame, v in zip(frames, values, strict=True)])


def strip(frames: Sequence[np.ndarray] | np.ndarray, gap: int = 2, side: int = STRIP_SIDE) -> np.ndarray:
    """The frames in one row, each at most ``side`` pixels on its longer side, ``gap`` white pixels between."""
    import numpy as np
    from PIL import Image

    height, width = frames[0].shape[:2]
    if max(height, width) > side:
        scale = side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames]
    return montage(frames, columns=len(frames), gap=gap)


def montage(frames: Sequence[np.ndarray] | np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """The frames (all of one size) in rows of ``columns`` (default: a near-square grid), in order, ``gap``
    white pixels between them; the last row's empty cells white."""
    import numpy as np

    count = len(frames)
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = frames[0].shape[:2]
    out = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), 255, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        out[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = frame
    return out


def animated_gif(frames: Sequence[np.ndarray] | np.ndarray, ms: int = FRAME_MS) -> bytes:
    """The frames as an animated GIF (looping, ``ms`` per frame)."""
    import io

    from PIL import Image

    pictures = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=ms, loop=0,
                     disposal=1)  # fmt: skip
    return buffer.getvalue()


def _maps_bytes(records: Sequence[ImageResult], single: bool) -> bytes:
    """A maps file: one clip's (``--save-maps``) or a batch's (``--no-pictures``, keys prefixed ``<stem>/``)."""
    import numpy as np

    from camlens.pipeline.maps import npz_bytes

    arrays: dict[str, Any] = {"format": np.asarray(MAPS_FORMAT)}
    if not single:
        arrays["stems"] = np.asarray([r.stem for r in records], dtype=str)
    for r in records:
        assert isinstance(r, ClipResult)
        prefix = "" if single else f"{r.stem}/"
        for m, value in r.maps.items():
            arrays[f"{prefix}clip/{m}"] = value.numpy().astype(np.float32 if single else np.float16)
        arrays[f"{prefix}frame_indices"] = np.asarray(r.indices, dtype=np.int64)
        arrays[f"{prefix}class_id"] = np.int64(-1 if r.class_id is None else r.class_id)
        arrays[f"{prefix}score"] = np.float32(r.score)
        if single:
            arrays["stem"] = np.asarray(r.stem)
    return npz_bytes(arrays)
